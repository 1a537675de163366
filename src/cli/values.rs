//! Parsers for the values only flags take (a zstd level, a receiver's address),
//! each with its bounds: a value out of bounds is a usage error (exit 2), never a
//! panic or a silent wrap. Durations, counts, sizes and rates are `crate::units`,
//! since a users file reads them too.

use crate::net::Endpoint;
use crate::proto::compress;

/// The highest zstd level `--compress` takes (the slow "ultra" levels are left out).
pub(crate) const MAX_COMPRESS_LEVEL: i32 = 19;

/// A zstd level, 1 to [`MAX_COMPRESS_LEVEL`]; empty (`--compress` alone) is the default.
pub(crate) fn compress_level(text: &str) -> Result<i32, String> {
    if text.is_empty() {
        return Ok(compress::DEFAULT_LEVEL);
    }
    match text.parse::<i32>() {
        Ok(level) if (1..=MAX_COMPRESS_LEVEL).contains(&level) => Ok(level),
        _ => Err(format!(
            "{text:?} is not a compression level (1 to {MAX_COMPRESS_LEVEL}; default {})",
            compress::DEFAULT_LEVEL
        )),
    }
}

/// `HOST:PORT` for `recv`, with a hint for the common slip of a bare port.
pub(crate) fn endpoint(text: &str) -> Result<Endpoint, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Err(format!(
            "expected HOST:PORT of a listening sender; did you mean `--listen {port}`?"
        ));
    }
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_levels_have_bounds() {
        assert!(compress_level("").is_ok() && compress_level("19").is_ok());
        assert!(compress_level("0").is_err() && compress_level("20").is_err());
    }

    #[test]
    fn a_bare_port_given_to_recv_gets_a_hint() {
        let err = endpoint("9000").unwrap_err();
        assert!(err.contains("--listen 9000"), "{err}");
        assert!(endpoint("host:9000").is_ok());
    }
}
