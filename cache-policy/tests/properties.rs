//! Properties of the TTL arithmetic over random headers, rules and clocks.

mod support;

use std::time::Duration;

use cache_policy::{Freshness, Policy, Rules};
use proptest::prelude::*;
use support::{at, date, req, res};

const DAY: u64 = 86_400;

fn opt_secs(max: u64) -> impl Strategy<Value = Option<Duration>> {
    proptest::option::of((0..max).prop_map(Duration::from_secs))
}

fn rules() -> impl Strategy<Value = Rules> {
    (opt_secs(DAY), opt_secs(DAY), opt_secs(DAY), opt_secs(DAY), opt_secs(DAY), opt_secs(DAY)).prop_map(
        |(default_ttl, min_ttl, max_ttl, override_ttl, swr, sie)| Rules {
            default_ttl,
            min_ttl,
            max_ttl,
            override_ttl,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            ..Rules::default()
        },
    )
}

/// Response headers: a mix of freshness sources, validators and an origin Age.
fn response_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        proptest::option::of(0..10 * DAY),
        proptest::option::of(0..10 * DAY),
        proptest::option::of(-(DAY as i64)..10 * DAY as i64),
        proptest::option::of(0..100 * DAY as i64),
        proptest::option::of(0..DAY),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(max_age, s_maxage, expires, last_modified, age, no_cache, must_revalidate)| {
            let mut cc = Vec::new();
            cc.extend(max_age.map(|s| format!("max-age={s}")));
            cc.extend(s_maxage.map(|s| format!("s-maxage={s}")));
            if no_cache {
                cc.push("no-cache".to_owned());
            }
            if must_revalidate {
                cc.push("must-revalidate".to_owned());
            }
            let mut headers = vec![("etag".to_owned(), "\"v\"".to_owned())];
            if !cc.is_empty() {
                headers.push(("cache-control".to_owned(), cc.join(", ")));
            }
            headers.extend(expires.map(|e| ("expires".to_owned(), date(e))));
            headers.extend(last_modified.map(|l| ("last-modified".to_owned(), date(-l))));
            headers.extend(age.map(|a| ("age".to_owned(), a.to_string())));
            headers
        })
}

fn make_policy(headers: &[(String, String)], rules: &Rules, delay: i64) -> Policy {
    let list: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // Every generated response has an ETag, so it is always storable.
    Policy::new(&req(&[]), &res(200, &list), rules, at(-delay), at(0)).expect("storable")
}

proptest! {
    #[test]
    fn clamps_are_respected(headers in response_headers(), rules in rules(), delay in 0..60i64) {
        let policy = make_policy(&headers, &rules, delay);
        let lifetime = policy.lifetime();
        if let Some(max) = rules.max_ttl {
            prop_assert!(lifetime <= max);
        }
        let no_cache = headers.iter().any(|(_, v)| v.contains("no-cache"));
        let revalidates_always = no_cache && rules.override_ttl.is_none();
        if let Some(min) = rules.min_ttl
            && !revalidates_always
            && rules.max_ttl.is_none_or(|max| min <= max)
        {
            prop_assert!(lifetime >= min);
        }
        if let Some(ttl) = rules.override_ttl {
            let clamped = rules.max_ttl.map_or(ttl.max(rules.min_ttl.unwrap_or_default()), |max| {
                ttl.max(rules.min_ttl.unwrap_or_default()).min(max)
            });
            prop_assert_eq!(lifetime, clamped);
        }
        if revalidates_always {
            prop_assert_eq!(lifetime, Duration::ZERO);
        }
    }

    #[test]
    fn ttl_and_age_move_with_the_clock(
        headers in response_headers(),
        rules in rules(),
        delay in 0..60i64,
        t1 in -(DAY as i64)..20 * DAY as i64,
        step in 0..20 * DAY as i64,
    ) {
        let policy = make_policy(&headers, &rules, delay);
        let (now, later) = (at(t1), at(t1 + step));
        prop_assert!(policy.age(later) >= policy.age(now));
        prop_assert!(policy.ttl(later) <= policy.ttl(now));
        prop_assert!(policy.ttl(now) <= policy.lifetime());
        prop_assert!(policy.usable_for(now) >= policy.ttl(now));
        if policy.age(now) <= policy.lifetime() {
            prop_assert_eq!(policy.ttl(now) + policy.age(now), policy.lifetime());
        } else {
            prop_assert_eq!(policy.ttl(now), Duration::ZERO);
        }
        let secs = policy.ttl_secs(now);
        prop_assert_eq!(secs > 0, policy.ttl(now).as_secs() > 0);
        // Without request directives the answer is Fresh exactly while ttl > 0.
        let fresh = policy.evaluate(&req(&[]), now) == Freshness::Fresh;
        let no_cache = headers.iter().any(|(_, v)| v.contains("no-cache")) && rules.override_ttl.is_none();
        prop_assert_eq!(fresh, !no_cache && !policy.ttl(now).is_zero());
    }

    #[test]
    fn serde_round_trip(headers in response_headers(), rules in rules(), delay in 0..60i64) {
        let policy = make_policy(&headers, &rules, delay);
        let json = serde_json::to_string(&policy).unwrap();
        let back: Policy = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, policy);
    }
}
