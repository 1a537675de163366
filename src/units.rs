//! Durations, counts, sizes and rates read from text (flags and the users file), each
//! with its bounds: a value out of bounds is an error naming the bound, never a panic
//! or a silent wrap. Sizes follow curl's mixed rule (`K` counts 1024s, `KB` 1000s),
//! which neither `bytesize` nor `parse-size` does. A leaf: it imports nothing from
//! the crate.

use std::time::Duration;

/// Longest duration any flag accepts, in seconds (about 31 years): far beyond any
/// real wait, far below where time arithmetic could overflow.
pub(crate) const MAX_SECS: u64 = 1_000_000_000;

/// Seconds, 0 to [`MAX_SECS`].
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let secs: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))?;
    if secs > MAX_SECS {
        return Err(format!("at most {MAX_SECS} seconds"));
    }
    Ok(Duration::from_secs(secs))
}

/// Seconds, 1 to [`MAX_SECS`].
pub(crate) fn positive_seconds(text: &str) -> Result<Duration, String> {
    let duration = seconds(text)?;
    if duration.is_zero() {
        return Err("must be at least 1 second".into());
    }
    Ok(duration)
}

/// Hours, 0 to [`MAX_SECS`] / 3600.
pub(crate) fn hours(text: &str) -> Result<Duration, String> {
    let hours: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of hours"))?;
    let max = MAX_SECS / 3600;
    if hours > max {
        return Err(format!("at most {max} hours"));
    }
    Ok(Duration::from_secs(hours * 3600))
}

/// Most of anything a count flag may say (connections, sessions): beyond any
/// machine's threads and descriptors.
pub(crate) const MAX_COUNT: usize = 1_000_000;

/// A count, 1 to [`MAX_COUNT`].
pub(crate) fn count(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    if !(1..=MAX_COUNT).contains(&n) {
        return Err(format!("must be 1 to {MAX_COUNT}"));
    }
    Ok(n)
}

/// A byte count: whole bytes, or a number with a unit. `K`, `M`, `G`, `T` count in
/// 1024s (as `curl --limit-rate` does), `KB`..`TB` in 1000s, `KiB`..`TiB` in 1024s.
/// Fractions are allowed with a unit (`1.5G`). At most 2^64 - 1 bytes.
pub(crate) fn bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let scale: u64 = match unit {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "m" | "MiB" => 1 << 20,
        "G" | "g" | "GiB" => 1 << 30,
        "T" | "t" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use K, M, G, T, KB..TB or KiB..TiB)"
            ));
        }
    };
    if number.is_empty() {
        return Err(format!("{text:?} has no number"));
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(scale)
            .ok_or_else(|| format!("{text:?} is more than 2^64 - 1 bytes"));
    }
    let fraction: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let value = fraction * scale as f64;
    if !value.is_finite() || value >= u64::MAX as f64 {
        return Err(format!("{text:?} is more than 2^64 - 1 bytes"));
    }
    Ok(value.round() as u64)
}

/// A rate in bytes per second for `--limit-rate`: a size as [`bytes`] reads it,
/// optionally followed by `/s`; at least 1 KiB/s, so a typo cannot stall a transfer
/// for days.
pub(crate) fn rate(text: &str) -> Result<u64, String> {
    let per_second = bytes(text.trim().trim_end_matches("/s"))?;
    if per_second < 1024 {
        return Err(format!("{text:?} is below the slowest rate, 1 KiB/s"));
    }
    Ok(per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_bounds_and_never_overflow() {
        assert_eq!(seconds("0").unwrap(), Duration::ZERO);
        assert!(seconds(&MAX_SECS.to_string()).is_ok());
        assert!(seconds(&(MAX_SECS + 1).to_string()).is_err());
        assert!(seconds("18446744073709551615").is_err());
        assert!(seconds("18446744073709551616").is_err());
        assert!(seconds("-1").is_err());
        assert!(positive_seconds("0").is_err());
        assert!(hours(&(MAX_SECS / 3600).to_string()).is_ok());
        assert!(hours(&(MAX_SECS / 3600 + 1).to_string()).is_err());
        assert!(count("0").is_err() && count("1").is_ok());
        assert!(count(&MAX_COUNT.to_string()).is_ok());
        assert!(count(&(MAX_COUNT + 1).to_string()).is_err());
    }

    #[test]
    fn sizes_and_rates_read_like_curl_and_like_disks() {
        assert_eq!(bytes("123").unwrap(), 123);
        assert_eq!(bytes("2M").unwrap(), 2_097_152);
        assert_eq!(bytes("2m").unwrap(), 2_097_152, "curl takes lowercase too");
        assert_eq!(bytes("2MB").unwrap(), 2_000_000);
        assert_eq!(bytes("2MiB").unwrap(), 2_097_152);
        assert_eq!(bytes("20 GiB").unwrap(), 20 << 30);
        assert_eq!(bytes("1.5K").unwrap(), 1536);
        assert_eq!(bytes("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "",
            "K",
            "2X",
            "-1",
            "1e3",
            "18446744073709551616",
            "17179869184G",
            "1.2.3M",
        ] {
            assert!(bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(rate("2M").unwrap(), 2_097_152);
        assert_eq!(rate("500K/s").unwrap(), 512_000);
        assert!(rate("100").is_err());
    }
}
