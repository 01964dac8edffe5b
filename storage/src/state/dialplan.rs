//! The dial plan: patterns over dialled digits, each leading to a target
//! (a registered number or a gateway group) with digit manipulation.
//!
//! Pattern syntax (after the seed-002 digit analysis, e.g. `9@`):
//! - a literal is one of `0-9 * # +` and matches itself;
//! - `X` matches exactly one digit `0-9`;
//! - a trailing `@` matches one or more remaining characters.
//!
//! When several patterns match, the most specific wins: the longest literal
//! prefix first, then a closed pattern (no `@`) before an open one, then the
//! fewest `X`, then the lower priority number, then the pattern text (so the
//! order is total and every replica picks the same route).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest accepted pattern or dialled string, in characters.
pub const MAX_DIGITS: usize = 64;

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteTarget {
    /// Look the (manipulated) digits up in the registration table.
    Registered,
    /// Offer the gateways of this group.
    GatewayGroup(String),
}

/// One dial-plan route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The pattern (see the module docs); also the route's key.
    pub pattern: String,
    /// Tie-breaker between equally specific patterns; lower wins.
    pub priority: u32,
    /// Where matching calls go.
    pub target: RouteTarget,
    /// Leading digits removed before the target sees them.
    pub strip: u8,
    /// Prepended after stripping.
    pub prefix: String,
}

impl Route {
    /// The digits the target sees: `digits` minus `strip` leading characters,
    /// with `prefix` in front.
    pub fn manipulate(&self, digits: &str) -> String {
        let rest = digits.get(usize::from(self.strip).min(digits.len())..).unwrap_or("");
        let mut out = String::with_capacity(self.prefix.len() + rest.len());
        out.push_str(&self.prefix);
        out.push_str(rest);
        out
    }
}

/// Whether `c` may appear in dialled digits and as a pattern literal.
pub fn is_dial_char(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b'*' | b'#' | b'+')
}

/// Check dialled digits: non-empty, at most [`MAX_DIGITS`], only dial characters.
pub fn validate_digits(digits: &str) -> Result<(), String> {
    if digits.is_empty() {
        return Err("digits are empty".into());
    }
    if digits.len() > MAX_DIGITS {
        return Err(format!("digits longer than {MAX_DIGITS} characters"));
    }
    match digits.bytes().find(|c| !is_dial_char(*c)) {
        Some(c) => Err(format!("digits {digits:?} contain {:?}; allowed: 0-9 * # +", c as char)),
        None => Ok(()),
    }
}

/// Check a pattern's syntax.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("pattern is empty".into());
    }
    if pattern.len() > MAX_DIGITS {
        return Err(format!("pattern longer than {MAX_DIGITS} characters"));
    }
    let bytes = pattern.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        let ok = is_dial_char(c) || c == b'X' || (c == b'@' && i == bytes.len() - 1);
        if !ok {
            return Err(format!(
                "pattern {pattern:?}: {:?} at position {i} is not allowed \
                 (literals 0-9 * # +, X = one digit, @ only at the end)",
                c as char
            ));
        }
    }
    // A bare "@" is allowed: it is the catch-all route.
    Ok(())
}

/// Whether `pattern` (already validated) matches all of `digits`.
pub fn matches(pattern: &str, digits: &str) -> bool {
    let (body, open) = match pattern.strip_suffix('@') {
        Some(body) => (body.as_bytes(), true),
        None => (pattern.as_bytes(), false),
    };
    let d = digits.as_bytes();
    let len_ok = if open { d.len() > body.len() } else { d.len() == body.len() };
    len_ok
        && body.iter().zip(d).all(|(&p, &c)| match p {
            b'X' => c.is_ascii_digit(),
            _ => p == c,
        })
}

/// The specificity key of a pattern: smaller sorts first (more specific).
/// Fields: literal prefix length (reversed), open (`@`), number of `X`,
/// priority.
pub(crate) fn specificity(route: &Route) -> (std::cmp::Reverse<usize>, bool, usize, u32) {
    let p = route.pattern.as_bytes();
    let literal_prefix = p.iter().take_while(|&&c| is_dial_char(c)).count();
    let open = p.last() == Some(&b'@');
    let xs = p.iter().filter(|&&c| c == b'X').count();
    (std::cmp::Reverse(literal_prefix), open, xs, route.priority)
}

/// Order routes most specific first (see the module docs).
pub fn more_specific(a: &Route, b: &Route) -> Ordering {
    specificity(a).cmp(&specificity(b)).then_with(|| a.pattern.cmp(&b.pattern))
}

/// The dial plan: pattern -> route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialPlan {
    by_pattern: BTreeMap<String, Route>,
}

impl DialPlan {
    /// The route with this exact pattern.
    pub fn get(&self, pattern: &str) -> Option<&Route> {
        self.by_pattern.get(pattern)
    }

    /// Every route, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.by_pattern.values()
    }

    /// The most specific route matching `digits`, if any. A linear scan: dial
    /// plans are hundreds of routes, not millions.
    pub fn best_match(&self, digits: &str) -> Option<&Route> {
        self.by_pattern
            .values()
            .filter(|r| matches(&r.pattern, digits))
            .min_by(|a, b| more_specific(a, b))
    }

    pub(crate) fn put(&mut self, route: Route) {
        self.by_pattern.insert(route.pattern.clone(), route);
    }

    pub(crate) fn remove(&mut self, pattern: &str) -> Option<Route> {
        self.by_pattern.remove(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pattern: &str, priority: u32) -> Route {
        Route {
            pattern: pattern.into(),
            priority,
            target: RouteTarget::Registered,
            strip: 0,
            prefix: String::new(),
        }
    }

    #[test]
    fn literal_x_and_open_patterns_match_as_documented() {
        assert!(matches("1000", "1000"));
        assert!(!matches("1000", "10000"));
        assert!(!matches("1000", "100"));
        assert!(matches("1XXX", "1234"));
        assert!(!matches("1XXX", "1*34"), "X matches digits only");
        assert!(matches("9@", "95551234"));
        assert!(!matches("9@", "9"), "@ needs at least one character");
        assert!(!matches("9@", "85551234"));
        assert!(matches("@", "+4930"));
    }

    #[test]
    fn pattern_validation_names_the_bad_character() {
        assert!(validate_pattern("9@").is_ok());
        assert!(validate_pattern("+1XXX").is_ok());
        let err = validate_pattern("9@1").unwrap_err();
        assert!(err.contains("position 1"), "{err}");
        assert!(validate_pattern("").is_err());
        assert!(validate_pattern("12a").is_err());
        assert!(validate_pattern(&"1".repeat(MAX_DIGITS + 1)).is_err());
        assert!(validate_digits("1x").is_err());
        assert!(validate_digits("").is_err());
    }

    #[test]
    fn most_specific_route_wins() {
        let mut plan = DialPlan::default();
        for (p, prio) in [("9@", 10), ("95@", 10), ("9XXX", 10), ("955X", 20), ("955@", 5)] {
            plan.put(route(p, prio));
        }
        // Longest literal prefix first: 955X and 955@ both have 3; closed beats open.
        assert_eq!(plan.best_match("9551").unwrap().pattern, "955X");
        // 95512 is too long for 955X: 955@.
        assert_eq!(plan.best_match("95512").unwrap().pattern, "955@");
        // 9123: 9XXX and 9@ both have prefix 1; closed first.
        assert_eq!(plan.best_match("9123").unwrap().pattern, "9XXX");
        assert_eq!(plan.best_match("91234").unwrap().pattern, "9@");
        assert_eq!(plan.best_match("8123"), None);
    }

    #[test]
    fn priority_breaks_ties_between_equally_specific_patterns() {
        let mut plan = DialPlan::default();
        plan.put(route("1X3", 20));
        plan.put(route("1XX", 10));
        // Same prefix (1); 1X3 has fewer X, so it wins despite its priority.
        assert_eq!(plan.best_match("123").unwrap().pattern, "1X3");
        let mut plan = DialPlan::default();
        plan.put(route("1X@", 20));
        plan.put(route("1X#@", 10));
        // 1X#@ has prefix 1, one X, open: equal to 1X@ except priority.
        assert_eq!(plan.best_match("12#5").unwrap().pattern, "1X#@");
    }

    #[test]
    fn manipulation_strips_then_prefixes() {
        let r = Route { strip: 1, prefix: "+1".into(), ..route("9@", 0) };
        assert_eq!(r.manipulate("95551234"), "+15551234");
        let r = Route { strip: 200, prefix: "0".into(), ..route("9@", 0) };
        assert_eq!(r.manipulate("95"), "0");
    }
}
