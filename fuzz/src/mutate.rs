//! A deterministic byte mutator for the stable harness: bit flips, interesting values, truncations,
//! insertions, splices of two inputs, and huge numbers written over integers, in binary and as text.

/// SplitMix64: small, seedable, good enough to choose mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that break size arithmetic when they land in a header.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Decimal texts that break parsers of JSON and Python literals.
const HUGE_TEXT: &[&str] = &[
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999999",
    "1e308",
    "1e999",
    "-0",
    "NaN",
];

/// Input `index` of a campaign over `seeds` with `seed`: the same arguments always give the same bytes,
/// so a failing input can be rebuilt from its index.
pub fn input(seeds: &[(String, Vec<u8>)], seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xa076_1d64_78bd_642f));
    if seeds.is_empty() {
        let n = rng.below(64);
        return (0..n).map(|_| rng.next_u64() as u8).collect();
    }
    // The seeds themselves come first, unchanged.
    if (index as usize) < seeds.len() {
        return seeds[index as usize].1.clone();
    }
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate(&mut data, seeds, &mut rng);
    }
    data
}

/// Applies one random mutation to `data`.
pub fn mutate(data: &mut Vec<u8>, seeds: &[(String, Vec<u8>)], rng: &mut Rng) {
    let len = data.len();
    match rng.below(10) {
        // Flip a few bits.
        0 => {
            for _ in 0..1 + rng.below(8) {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
            }
        }
        // Set a byte to an interesting value.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
        }
        // Write an interesting integer (2, 4 or 8 bytes, either endianness) over the data.
        2 if len > 0 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [2, 4, 8][rng.below(3)];
            let bytes = if rng.below(2) == 0 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            let bytes = if rng.below(2) == 0 {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            let i = rng.below(len);
            for (k, b) in bytes.iter().enumerate() {
                if let Some(d) = data.get_mut(i + k) {
                    *d = *b;
                }
            }
        }
        // Truncate.
        3 if len > 0 => data.truncate(rng.below(len)),
        // Delete a range.
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            data.drain(a..b);
        }
        // Insert random bytes, or repeat a range (grows structures).
        5 => {
            let at = rng.below(len + 1);
            if len > 0 && rng.below(2) == 0 {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let chunk = data[a..b].to_vec();
                let times = 1 + rng.below(8);
                for _ in 0..times {
                    data.splice(at..at, chunk.iter().copied());
                }
            } else {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
        }
        // Splice with another seed: our head, its tail.
        6 if !seeds.is_empty() => {
            let other = &seeds[rng.below(seeds.len())].1;
            let a = rng.below(len + 1);
            let b = rng.below(other.len() + 1);
            data.truncate(a);
            data.extend_from_slice(&other[b..]);
        }
        // Replace a run of ASCII digits (a number in a JSON or Python header) by a huge or odd number.
        7 | 8 => {
            let digits: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_digit())
                .map(|(i, _)| i)
                .collect();
            if digits.is_empty() {
                return;
            }
            let start = digits[rng.below(digits.len())];
            let end = (start..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
            let text = HUGE_TEXT[rng.below(HUGE_TEXT.len())];
            data.splice(start..end, text.bytes());
        }
        // Overwrite a range with one byte value.
        _ if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            let v = rng.next_u64() as u8;
            data[a..b].iter_mut().for_each(|x| *x = v);
        }
        _ => data.push(rng.next_u64() as u8),
    }
    // Keep inputs small: the point is structure, not size.
    data.truncate(1 << 20);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_reproducible_and_seeds_come_first() {
        let seeds = vec![
            ("a".to_string(), b"{\"shape\": [3, 224]}".to_vec()),
            ("b".to_string(), vec![1, 2, 3]),
        ];
        assert_eq!(input(&seeds, 7, 0), seeds[0].1);
        assert_eq!(input(&seeds, 7, 1), seeds[1].1);
        for i in 2..200 {
            assert_eq!(input(&seeds, 7, i), input(&seeds, 7, i));
        }
        let distinct: std::collections::HashSet<Vec<u8>> = (2..200).map(|i| input(&seeds, 7, i)).collect();
        assert!(distinct.len() > 100, "only {} distinct inputs", distinct.len());
    }
}
