//! Entity-tags (RFC 9110 §8.8.3) and their strong and weak comparison.
//!
//! An opaque tag keeps its quotes, so `"a,b"` is one tag: lists are split on
//! commas outside quotes only. Unquoted tags, which some servers send, are
//! accepted as opaque tokens rather than dropped, so they can still match.

/// One entity-tag borrowed from a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    pub(crate) weak: bool,
    pub(crate) opaque: &'a str,
}

impl EntityTag<'_> {
    /// Weak comparison: opaque tags equal, weakness ignored (used by If-None-Match).
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// Strong comparison: both strong and opaque tags equal.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// A member of an `If-None-Match`-style list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Member<'a> {
    Any,
    Tag(EntityTag<'a>),
}

/// Parses a comma-separated list of entity-tags and `*`.
pub(crate) fn parse_list(value: &str) -> Vec<Member<'_>> {
    let mut members = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return members;
        }
        let (weak, body) = match rest.strip_prefix("W/") {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let end = match body.strip_prefix('"') {
            Some(inner) => inner.find('"').map_or(body.len(), |i| i + 2),
            None => body.find(',').unwrap_or(body.len()),
        };
        let opaque = body[..end].trim_end();
        rest = &body[end..];
        if opaque == "*" && !weak {
            members.push(Member::Any);
        } else if !opaque.is_empty() {
            members.push(Member::Tag(EntityTag { weak, opaque }));
        }
    }
}

/// The single entity-tag of an `ETag` value (the first, if several were sent).
pub(crate) fn parse_one(value: &str) -> Option<EntityTag<'_>> {
    parse_list(value).into_iter().find_map(|m| match m {
        Member::Tag(tag) => Some(tag),
        Member::Any => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(weak: bool, opaque: &str) -> Member<'_> {
        Member::Tag(EntityTag { weak, opaque })
    }

    #[test]
    fn parses_lists_with_commas_inside_quotes() {
        assert_eq!(
            parse_list(r#"W/"a", "b,c" ,, *, bare"#),
            vec![tag(true, r#""a""#), tag(false, r#""b,c""#), Member::Any, tag(false, "bare")]
        );
        assert_eq!(parse_list(r#""unterminated"#), vec![tag(false, r#""unterminated"#)]);
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn comparisons() {
        let strong = EntityTag { weak: false, opaque: "\"x\"" };
        let weak = EntityTag { weak: true, opaque: "\"x\"" };
        assert!(strong.weak_eq(&weak));
        assert!(strong.strong_eq(&strong));
        assert!(!strong.strong_eq(&weak));
        assert!(!weak.strong_eq(&weak));
    }
}
