//! Value parsers of the flags whose values need more than their type's `FromStr`: durations in
//! seconds, devices and weight dtypes. A bad value is a clap error that names the flag and says
//! what is accepted, before any command starts, so no later conversion can panic on it.

use clap::builder::PossibleValuesParser;

/// The longest duration any flag accepts: 30 days. Far beyond any episode or test run, and far
/// below what makes `Duration` or deadline arithmetic (`Instant + Duration`) overflow.
pub const MAX_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// A duration in seconds: a finite number from 0 to [`MAX_SECONDS`], fractions allowed.
pub fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() {
        return Err(format!("`{text}` is not a finite number of seconds"));
    }
    if value < 0.0 {
        return Err(format!(
            "`{text}` is negative; a duration is 0 seconds or more"
        ));
    }
    if value > MAX_SECONDS {
        return Err(format!(
            "`{text}` seconds is too long; the most accepted is {MAX_SECONDS} (30 days)"
        ));
    }
    Ok(value)
}

/// [`seconds`] for the flags that take whole seconds.
pub fn whole_seconds(text: &str) -> Result<u64, String> {
    let value = seconds(text)?;
    if value.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of seconds"));
    }
    // In range and integral, so the conversion is exact.
    Ok(value as u64)
}

/// A device name: `cpu`, `cuda` or `cuda:N` (whether the device can be opened is checked when
/// the command opens it).
pub fn device(text: &str) -> Result<String, String> {
    match model::DeviceName::parse(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "unknown device `{text}` (expected cpu, cuda or cuda:N)"
        )),
    }
}

/// The weight dtypes `crate::model_cli::dtype` reads, listed so that `--help` shows them and
/// anything else is refused by clap.
pub fn dtype() -> PossibleValuesParser {
    PossibleValuesParser::new(["f32", "bf16", "f16", "float32", "bfloat16", "float16"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_seconds(text: &str, expected: Result<f64, &str>) {
        match (seconds(text), expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{text}"),
            (Err(message), Err(needle)) => {
                assert!(message.contains(needle), "{text}: {message}")
            }
            (actual, expected) => panic!("{text}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn seconds_accepts_finite_durations_in_range() {
        check_seconds("60", Ok(60.0));
        check_seconds("0.25", Ok(0.25));
        check_seconds("0", Ok(0.0));
        check_seconds("2592000", Ok(MAX_SECONDS));
    }

    #[test]
    fn seconds_rejects_what_would_panic_or_overflow() {
        check_seconds("-1", Err("negative"));
        check_seconds("-0.5", Err("negative"));
        check_seconds("nan", Err("finite"));
        check_seconds("NaN", Err("finite"));
        check_seconds("inf", Err("finite"));
        check_seconds("-inf", Err("finite"));
        check_seconds("1e20", Err("too long"));
        check_seconds("2592000.5", Err("too long"));
        check_seconds("18446744073709551615", Err("too long"));
        check_seconds("ten", Err("not a number"));
        check_seconds("", Err("not a number"));
    }

    #[test]
    fn whole_seconds_refuses_fractions() {
        assert_eq!(whole_seconds("300"), Ok(300));
        assert!(whole_seconds("1.5").unwrap_err().contains("whole"));
        assert!(whole_seconds("-3").unwrap_err().contains("negative"));
        assert!(whole_seconds("99999999999")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn device_names() {
        for good in ["cpu", "cuda", "cuda:0", "cuda:3"] {
            assert_eq!(device(good).as_deref(), Ok(good));
        }
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1", "CPU"] {
            let message = device(bad).unwrap_err();
            assert!(
                message.contains("expected cpu, cuda or cuda:N"),
                "{bad}: {message}"
            );
        }
    }

    /// Every dtype clap lets through is one `model_cli::dtype` maps, and clap refuses others.
    #[test]
    fn dtype_values_match_the_dtype_mapping() {
        use clap::builder::TypedValueParser as _;
        let parser = dtype();
        let command = clap::Command::new("test");
        let parse = |value: &str| parser.parse_ref(&command, None, std::ffi::OsStr::new(value));
        let listed: Vec<String> = parser
            .possible_values()
            .into_iter()
            .flatten()
            .map(|value| value.get_name().to_string())
            .collect();
        assert_eq!(listed.len(), 6, "{listed:?}");
        for value in &listed {
            let parsed = parse(value).unwrap();
            assert!(crate::model_cli::dtype(&parsed).is_ok(), "{value}");
        }
        for value in ["f64", "int8", "", "F32"] {
            assert!(parse(value).is_err(), "{value}");
        }
    }
}
