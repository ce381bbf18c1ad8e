//! Parsers for numeric flags: every number a user types is checked against a range before anything is
//! allocated or looped over, and the error names the flag (clap adds it) and the accepted range.

/// A `usize` in `lo..=hi`.
pub fn in_range(s: &str, lo: usize, hi: usize) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is out of range: use {lo} to {hi}"))
    }
}

/// Images per forward pass (`--batch-size`): 1 to 1024.
pub fn batch_size(s: &str) -> Result<usize, String> {
    in_range(s, 1, 1024)
}

/// Input side in pixels (`--size`): 8 to 4096.
pub fn image_side(s: &str) -> Result<usize, String> {
    in_range(s, 8, 4096)
}

/// A count of repetitions, epochs or steps: 1 to 1,000,000.
pub fn count(s: &str) -> Result<usize, String> {
    in_range(s, 1, 1_000_000)
}

/// A positive, finite number (a learning rate).
pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{s} must be a positive, finite number"))
    }
}

/// A finite number >= 0 (weight decay).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("{s} must be a finite number >= 0"))
    }
}

/// A fraction in [0, 1) (a validation split).
pub fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{s} must be at least 0 and less than 1"))
    }
}

/// A fraction in (0, 1] (a crop's minimum area).
pub fn unit_interval(s: &str) -> Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(format!("{s} must be greater than 0 and at most 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_out_of_range_are_refused() {
        assert!(batch_size("0").is_err() && batch_size("100000").is_err() && batch_size("8").is_ok());
        assert!(image_side("4294967296").is_err() && image_side("0").is_err());
        assert!(count("0").is_err() && count("-1").is_err());
        for bad in ["nan", "inf", "0", "-1e-3"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert!(fraction("1.5").is_err() && fraction("1").is_err() && fraction("0.2").is_ok());
        assert!(unit_interval("0").is_err() && unit_interval("1").is_ok());
    }
}
