//! CLIP's tokenizer: OpenCLIP's text cleaning ([`crate::clean`]), its split into words, then byte-level BPE
//! through the `tokenizers` crate, then the start and end tokens and truncation to the context length, as
//! OpenCLIP's `SimpleTokenizer`.
//!
//! The split is OpenCLIP's own regular expression, run here and handed to `tokenizers` as pre-tokenized words:
//! the special tokens, English contractions, runs of letters, single digits, runs of other non-space characters.
//! (The `Split` in `tokenizer.json` is the same expression for use elsewhere; but `tokenizers` would pull a
//! special token such as `<end_of_text>` out of a run of punctuation like `!<end_of_text>`, where OpenCLIP's
//! split keeps the run whole.)
//!
//! [`ClipTokenizer::openai`] uses the `tokenizer.json` built into this crate (`data/tokenizer.json`, made by
//! `scripts/gen_clip_tokenizer.py` from OpenCLIP's own vocabulary file); [`ClipTokenizer::from_file`] loads a
//! model repository's own (its start and end tokens are `<start_of_text>`/`<end_of_text>` or Hugging Face's
//! `<|startoftext|>`/`<|endoftext|>`). Texts are zero-padded to the context length; a text too long keeps its
//! first `context_length - 2` tokens between the start and end tokens.
//!
//! ```
//! let tok = clip::ClipTokenizer::openai()?;
//! // <start_of_text> a photo of a cat . <end_of_text>
//! assert_eq!(tok.encode("A photo of a CAT.")?, [49406, 320, 1125, 539, 320, 2368, 269, 49407]);
//! assert_eq!(tok.decode(&tok.encode("Tom &amp; Jerry")?)?, "tom & jerry");
//! # Ok::<(), clip::Error>(())
//! ```

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::clean::clean_text;
use crate::error::{invalid, Error, Result};

/// OpenCLIP's vocabulary as a `tokenizers` file (1.5 MB, built into the crate).
pub const OPENAI_TOKENIZER_JSON: &str = include_str!("../data/tokenizer.json");

/// Tokenizer files larger than this are refused before reading (CLIP's is 1.5 MB).
pub const MAX_TOKENIZER_FILE: u64 = 64 << 20;

/// CLIP's byte-level BPE tokenizer.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    /// OpenCLIP's word split, with this tokenizer's special tokens.
    split: regex::Regex,
    context_length: usize,
    sot: u32,
    eot: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("context_length", &self.context_length)
            .field("sot", &self.sot)
            .field("eot", &self.eot)
            .finish()
    }
}

fn tok_err(source: tokenizers::Error) -> Error {
    Error::Tokenizer { source }
}

impl ClipTokenizer {
    /// OpenAI's (and OpenCLIP's) tokenizer: 49408 ids, context 77.
    pub fn openai() -> Result<Self> {
        Self::from_json(OPENAI_TOKENIZER_JSON.as_bytes())
    }

    /// A tokenizer from `tokenizer.json` bytes.
    pub fn from_json(json: &[u8]) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(json).map_err(tok_err)?;
        // Truncation and the start/end tokens are applied here, the same way for any file.
        inner.with_truncation(None).map_err(tok_err)?;
        inner.with_padding(None);
        let find = |names: [&str; 2]| names.iter().find_map(|n| inner.token_to_id(n));
        let sot = find(["<start_of_text>", "<|startoftext|>"]);
        let eot = find(["<end_of_text>", "<|endoftext|>"]);
        let (Some(sot), Some(eot)) = (sot, eot) else {
            return Err(invalid(
                "the tokenizer has no start/end-of-text tokens (<start_of_text>, <|startoftext|>, ...)",
            ));
        };
        let special = |id: u32| inner.id_to_token(id).map(|t| regex::escape(&t)).unwrap_or_default();
        let (s, e) = (special(sot), special(eot));
        let pattern = format!(r"(?i){s}|{e}|'s|'t|'re|'ve|'m|'ll|'d|\p{{L}}+|\p{{N}}|[^\s\p{{L}}\p{{N}}]+");
        let split = regex::Regex::new(&pattern).map_err(|e| invalid(format!("word split {pattern:?}: {e}")))?;
        Ok(Self {
            inner,
            split,
            context_length: 77,
            sot,
            eot,
        })
    }

    /// A model repository's `tokenizer.json` (refused above [`MAX_TOKENIZER_FILE`] before reading).
    pub fn from_file(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_TOKENIZER_FILE {
            return Err(invalid(format!(
                "{}: {size} bytes is too large for a tokenizer file",
                path.display()
            )));
        }
        Self::from_json(&std::fs::read(path).map_err(io)?)
    }

    /// The same tokenizer with another context length (at least 2: the start and end tokens).
    pub fn with_context_length(mut self, context_length: usize) -> Result<Self> {
        if context_length < 2 {
            return Err(invalid(format!(
                "a context of {context_length} tokens cannot hold the start and end tokens"
            )));
        }
        self.context_length = context_length;
        Ok(self)
    }

    /// Tokens per text, start and end included (77).
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Ids in the vocabulary, the special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of the start-of-text token (49406).
    pub fn sot_id(&self) -> u32 {
        self.sot
    }

    /// Id of the end-of-text token (49407, the largest: the text tower reads its output there).
    pub fn eot_id(&self) -> u32 {
        self.eot
    }

    /// The BPE ids of a text after cleaning, without start and end tokens or truncation.
    pub fn encode_words(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = clean_text(text);
        let words: Vec<&str> = self.split.find_iter(&cleaned).map(|m| m.as_str()).collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .encode(words.as_slice(), false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// `[start, ids..., end]`, at most `context_length` long (not padded).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let words = self.encode_words(text)?;
        let keep = words.len().min(self.context_length - 2);
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.sot);
        ids.extend_from_slice(&words[..keep]);
        ids.push(self.eot);
        Ok(ids)
    }

    /// A `(N, context_length)` u32 batch, zero-padded after each end token (OpenCLIP's `tokenize`).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S], device: &Device) -> Result<Tensor> {
        let mut data = vec![0u32; texts.len() * self.context_length];
        for (row, text) in data.chunks_exact_mut(self.context_length).zip(texts) {
            let ids = self.encode(text.as_ref())?;
            row[..ids.len()].copy_from_slice(&ids);
        }
        Ok(Tensor::from_vec(data, (texts.len(), self.context_length), device)?)
    }

    /// Text of ids (start, end and padding zeros after the end dropped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let end = ids.iter().position(|&i| i == self.eot).unwrap_or(ids.len());
        let ids: Vec<u32> = ids[..end].iter().copied().filter(|&i| i != self.sot).collect();
        self.inner.decode(&ids, true).map_err(tok_err)
    }
}
