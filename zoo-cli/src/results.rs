//! Where `zoo run` writes its results, and which inputs it takes: the output formats (table, JSON lines, CSV),
//! `--output FILE` with `--resume` (inputs already in FILE are skipped; a half-written last line, as a killed
//! run leaves it, is cut off first), and `--shard K/N` (a deterministic share of the inputs, the same whatever
//! order they are listed in).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use resnet::Prediction;

/// How results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: the input, then one line per class.
    Table,
    /// One JSON object per input and line; with `logits`, all raw logits too.
    Json {
        /// Whether to include every logit.
        logits: bool,
    },
    /// One row per input: `input,index`, then `class_i,label_i,prob_i` for each rank.
    Csv,
}

/// One classified input.
pub struct Row<'a> {
    /// The file.
    pub input: &'a Path,
    /// Its place in a .npy batch (0 for an image).
    pub index: usize,
    /// Whether it came from a .npy file (the table shows the index then).
    pub npy: bool,
    /// The top classes, most probable first.
    pub top: &'a [Prediction],
    /// All logits.
    pub logits: &'a [f32],
}

/// A stable 64-bit hash (FNV-1a) of bytes: the same on every machine and in every run, unlike `std`'s.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn key(input: &Path, index: usize) -> u64 {
    let mut bytes = input.to_string_lossy().into_owned().into_bytes();
    bytes.push(0);
    bytes.extend_from_slice(index.to_string().as_bytes());
    stable_hash(&bytes)
}

/// `--shard K/N`: this process takes the inputs whose path hashes to K modulo N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which share, `0..count`.
    pub index: u64,
    /// How many shares.
    pub count: u64,
}

impl Shard {
    /// Parses `K/N` (0 <= K < N), or `auto`: K from `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job) or
    /// `SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN` (a Slurm job array), N from `ZOO_SHARDS` or
    /// `SLURM_ARRAY_TASK_COUNT`.
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_with(s, |k| std::env::var(k).ok())
    }

    /// [`Shard::parse`] with the environment given by `env`.
    pub fn parse_with(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |name: &str, v: &str| -> Result<u64> {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("--shard: {name} = {v:?} is not a whole number"))
        };
        let (index, count) = if s == "auto" {
            let index = match (env("JOB_COMPLETION_INDEX"), env("SLURM_ARRAY_TASK_ID")) {
                (Some(i), _) => num("JOB_COMPLETION_INDEX", &i)?,
                (None, Some(i)) => {
                    let min = env("SLURM_ARRAY_TASK_MIN").map_or(Ok(0), |m| num("SLURM_ARRAY_TASK_MIN", &m))?;
                    num("SLURM_ARRAY_TASK_ID", &i)?
                        .checked_sub(min)
                        .context("--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?
                }
                (None, None) => bail!(
                    "--shard auto: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID \
                     (Slurm job array) is set; give --shard K/N"
                ),
            };
            let count = match (env("ZOO_SHARDS"), env("SLURM_ARRAY_TASK_COUNT")) {
                (Some(n), _) => num("ZOO_SHARDS", &n)?,
                (None, Some(n)) => num("SLURM_ARRAY_TASK_COUNT", &n)?,
                (None, None) => bail!(
                    "--shard auto: set ZOO_SHARDS to the number of shards (a Kubernetes Job's `completions`), or \
                     run in a Slurm job array"
                ),
            };
            (index, count)
        } else {
            let (k, n) = s
                .split_once('/')
                .with_context(|| format!("--shard {s}: expected K/N (e.g. 0/4) or auto"))?;
            (num("K", k)?, num("N", n)?)
        };
        if count == 0 || index >= count {
            bail!("--shard: shard {index} of {count} does not exist (K counts from 0 to N-1)");
        }
        Ok(Self { index, count })
    }

    /// Whether this shard takes `input`.
    pub fn takes(&self, input: &Path) -> bool {
        stable_hash(input.to_string_lossy().as_bytes()) % self.count == self.index
    }
}

/// Which inputs this run takes: its shard's, less those already in the output file.
#[derive(Default)]
pub struct Selection {
    /// `--shard`.
    pub shard: Option<Shard>,
    /// Inputs already written (`--resume`).
    pub done: HashSet<u64>,
}

impl Selection {
    /// Whether the file `input` is in this run's shard.
    pub fn takes_file(&self, input: &Path) -> bool {
        self.shard.is_none_or(|s| s.takes(input))
    }

    /// Whether item `index` of `input` still has to be done.
    pub fn takes_item(&self, input: &Path, index: usize) -> bool {
        self.done.is_empty() || !self.done.contains(&key(input, index))
    }

    /// How many inputs were done before.
    pub fn resumed(&self) -> usize {
        self.done.len()
    }
}

/// Where results go: standard output, or a file written as results come (and flushed after each batch).
pub struct Sink {
    format: Format,
    file: Option<(PathBuf, std::io::BufWriter<File>)>,
    /// Whether the CSV header is still to be written.
    header_due: bool,
    /// Inputs already in the output file (`--resume`), by [`key`].
    done: HashSet<u64>,
}

impl Sink {
    /// Results to standard output.
    pub fn stdout(format: Format) -> Self {
        Self {
            format,
            file: None,
            header_due: format == Format::Csv,
            done: HashSet::new(),
        }
    }

    /// Results to `path`. Without `resume` the file must not exist yet (nothing is overwritten); with it,
    /// the inputs already there are remembered (handed over by [`Sink::take_done`], then skipped) and new
    /// results appended.
    pub fn file(path: &Path, format: Format, resume: bool) -> Result<Self> {
        if format == Format::Table && resume {
            bail!("--resume reads the results back: use it with --json or --csv");
        }
        let mut done = HashSet::new();
        let mut header_due = format == Format::Csv;
        let exists = std::fs::symlink_metadata(path).is_ok();
        if exists && !resume {
            bail!(
                "--output {}: the file exists; add --resume to continue it, or remove it",
                path.display()
            );
        }
        let file = if exists {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("--output {}", path.display()))?;
            if !f.metadata()?.is_file() {
                bail!("--output {}: not a regular file", path.display());
            }
            repair_last_line(&mut f).with_context(|| format!("--output {}", path.display()))?;
            let lines = read_done(&mut f, format, path)?;
            header_due &= lines.0 == 0;
            done = lines.1;
            f.seek(SeekFrom::End(0))?;
            f
        } else {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("--output {}", path.display()))?
        };
        Ok(Self {
            format,
            file: Some((path.to_path_buf(), std::io::BufWriter::new(file))),
            header_due,
            done,
        })
    }

    /// The inputs already in the output file (`--resume`), handed over to a [`Selection`].
    pub fn take_done(&mut self) -> HashSet<u64> {
        std::mem::take(&mut self.done)
    }

    /// Writes one result.
    pub fn write(&mut self, row: &Row, top_k: usize) -> Result<()> {
        let mut text = String::new();
        if self.header_due {
            self.header_due = false;
            let mut header = vec!["input".to_string(), "index".to_string()];
            for r in 1..=top_k {
                header.extend([format!("class_{r}"), format!("label_{r}"), format!("prob_{r}")]);
            }
            text.push_str(&csv_line(&header));
        }
        match self.format {
            Format::Table => {
                let suffix = if row.npy {
                    format!(" [{}]", row.index)
                } else {
                    String::new()
                };
                text.push_str(&format!("{}{suffix}\n", row.input.display()));
                for t in row.top {
                    text.push_str(&format!("  {:>6.2}%  {:>4}  {}\n", 100.0 * t.prob, t.class, t.label));
                }
            }
            Format::Json { logits } => {
                let line = JsonLine {
                    input: row.input.to_string_lossy().into_owned(),
                    index: row.index,
                    top: row.top,
                    logits: logits.then_some(row.logits),
                };
                text.push_str(&serde_json::to_string(&line)?);
                text.push('\n');
            }
            Format::Csv => {
                let mut fields = vec![row.input.to_string_lossy().into_owned(), row.index.to_string()];
                for t in row.top {
                    fields.extend([t.class.to_string(), t.label.clone(), t.prob.to_string()]);
                }
                text.push_str(&csv_line(&fields));
            }
        }
        match &mut self.file {
            Some((path, w)) => w
                .write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display())),
            None => crate::outln!("{}", text.trim_end_matches('\n')),
        }
    }

    /// Pushes what was written to the file (after each batch: a killed run loses at most the batch in
    /// flight).
    pub fn flush(&mut self) -> Result<()> {
        if let Some((path, w)) = &mut self.file {
            w.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// A JSON output line.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    input: String,
    index: usize,
    top: &'a [Prediction],
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<&'a [f32]>,
}

/// One CSV record (RFC 4180 quoting: fields with a comma, quote or line break are quoted, quotes doubled).
fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// The first two fields of a CSV record.
fn csv_first_two(line: &str) -> Option<(String, String)> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    while fields.len() < 2 {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
            match chars.next() {
                Some(',') | None => {}
                Some(_) => return None,
            }
        } else {
            for c in chars.by_ref() {
                if c == ',' {
                    break;
                }
                field.push(c);
            }
        }
        fields.push(field);
    }
    let mut it = fields.into_iter();
    Some((it.next()?, it.next()?))
}

/// Cuts a last line that has no line end (a run killed while writing it).
fn repair_last_line(f: &mut File) -> Result<()> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Find the last newline, reading backwards in blocks.
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    let mut keep = 0;
    'search: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        for i in (0..n).rev() {
            if buf[i] == b'\n' {
                keep = start + i as u64 + 1;
                break 'search;
            }
        }
        end = start;
    }
    if keep < len {
        eprintln!(
            "warning: cutting an unfinished last line ({} bytes) from the output",
            len - keep
        );
        f.set_len(keep)?;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(())
}

/// The inputs a results file holds: (records read, their keys). A line that cannot be read is an error.
fn read_done(f: &mut File, format: Format, path: &Path) -> Result<(usize, HashSet<u64>)> {
    let mut done = HashSet::new();
    let mut records = 0;
    for (i, line) in BufReader::new(&mut *f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let bad = || {
            anyhow::anyhow!(
                "--resume: {} line {} is not a result of this format",
                path.display(),
                i + 1
            )
        };
        let (input, index) = match format {
            Format::Json { .. } => {
                let v: serde_json::Value = serde_json::from_str(&line).map_err(|_| bad())?;
                let input = v["input"].as_str().ok_or_else(bad)?.to_string();
                (input, v["index"].as_u64().ok_or_else(bad)? as usize)
            }
            Format::Csv if i == 0 => {
                if !line.starts_with("input,index") {
                    return Err(bad());
                }
                records += 1;
                continue;
            }
            Format::Csv => {
                let (input, index) = csv_first_two(&line).ok_or_else(bad)?;
                (input, index.parse().map_err(|_| bad())?)
            }
            // `Sink::file` refuses --resume with the table before reading anything.
            Format::Table => return Err(bad()),
        };
        records += 1;
        done.insert(key(Path::new(&input), index));
    }
    Ok((records, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_from_flags_and_schedulers() {
        let none = |_: &str| None;
        assert_eq!(Shard::parse_with("2/4", none).unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1/0", "x/2", "2", "-1/3", "auto"] {
            assert!(Shard::parse_with(bad, none).is_err(), "{bad}");
        }
        let k8s = |k: &str| match k {
            "JOB_COMPLETION_INDEX" => Some("3".to_string()),
            "ZOO_SHARDS" => Some("8".to_string()),
            _ => None,
        };
        assert_eq!(Shard::parse_with("auto", k8s).unwrap(), Shard { index: 3, count: 8 });
        let slurm = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("5".to_string()),
            _ => None,
        };
        assert_eq!(Shard::parse_with("auto", slurm).unwrap(), Shard { index: 4, count: 5 });
    }

    #[test]
    fn every_input_is_in_exactly_one_shard() {
        let paths: Vec<PathBuf> = (0..2000).map(|i| PathBuf::from(format!("photos/{i:05}.jpg"))).collect();
        let shards: Vec<Shard> = (0..4).map(|index| Shard { index, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for p in &paths {
            let takers: Vec<usize> = (0..4).filter(|&s| shards[s].takes(p)).collect();
            assert_eq!(takers.len(), 1, "{}", p.display());
            sizes[takers[0]] += 1;
        }
        // Balanced within a few percent.
        assert!(sizes.iter().all(|&s| (400..=600).contains(&s)), "{sizes:?}");
        // FNV-1a's published test vectors.
        assert_eq!(stable_hash(b""), 0xcbf29ce484222325);
        assert_eq!(stable_hash(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn csv_fields_round_trip() {
        let fields = vec!["a \"quoted\", name.jpg".to_string(), "3".to_string(), "x".to_string()];
        let line = csv_line(&fields);
        assert_eq!(line, "\"a \"\"quoted\"\", name.jpg\",3,x\n");
        assert_eq!(
            csv_first_two(line.trim_end()).unwrap(),
            ("a \"quoted\", name.jpg".to_string(), "3".to_string())
        );
        assert_eq!(csv_first_two("p.jpg,0,1").unwrap(), ("p.jpg".into(), "0".into()));
    }
}
