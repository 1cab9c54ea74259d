//! Python's `repr(float)`, digit for digit.
//!
//! MMAD's tables are written by pandas and its answers by `json.dump`; both print a
//! float as Python's `repr` does. Our CSV export and our Python-layout JSON share
//! this one formatter so that a byte comparison with MMAD's own files can hold.

/// Format a float exactly as Python's `repr(float)` does.
///
/// Shortest digits that round-trip; positional notation with a trailing `.0` for
/// integral values when the decimal exponent is in `-4..16`, otherwise `d.ddde±XX`
/// with at least two exponent digits; `nan`, `inf`, `-inf`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let (digits, exponent) = shortest_digits(x.abs());

    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{exp_sign}{:02}", exponent.abs());
    }
    // Position of the decimal point relative to the start of `digits`.
    let point = exponent + 1;
    let n = digits.len() as i32;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= n {
        format!("{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// Shortest round-trip significant digits of a finite `x >= 0` and the decimal exponent
/// of the first one, chosen like Python (David Gay's mode 0).
///
/// Rust's `{:e}` finds the shortest length, but when two strings of that length both
/// round-trip and `x` lies exactly halfway between them it can pick the upper one
/// (`804303936701641.3` for what Python prints as `804303936701641.2`). Python takes
/// the one nearest to `x`, ties to even; that is the correctly rounded value at that
/// length, which Rust's `{:.*e}` computes exactly. Use it whenever it round-trips.
fn shortest_digits(x: f64) -> (String, i32) {
    fn split(sci: &str) -> (String, i32) {
        let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
        let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
        (digits, exponent.parse().unwrap_or(0))
    }
    let shortest = format!("{x:e}");
    let (digits, exponent) = split(&shortest);
    let nearest = format!("{x:.*e}", digits.len().saturating_sub(1));
    if nearest.parse::<f64>() == Ok(x) {
        split(&nearest)
    } else {
        (digits, exponent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_float_repr_cases() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (75.0, "75.0"),
            (100.0, "100.0"),
            (57.49999999999999, "57.49999999999999"),
            (1.0 / 3.0 * 100.0, "33.33333333333333"),
            (100.0 / 3.0, "33.333333333333336"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789.125, "123456789.125"),
            (1e15, "1000000000000000.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e22, "1e+22"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5, "-2.5"),
            (-1e-10, "-1e-10"),
            // Exactly halfway between two shortest candidates: Python rounds to even.
            // (Written as sums: a literal ending in .25 trips clippy, which suggests .3.)
            (804_303_936_701_641.0 + 0.25, "804303936701641.2"),
            (635_067_432_139_354.0 + 0.25, "635067432139354.2"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float_repr(*x), *want, "{x:?}");
        }
    }
}
