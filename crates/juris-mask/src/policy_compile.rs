//! Policy compilation: validation of every rule (all problems reported at
//! once, keyed like the config) and construction of the [`Masker`].

use crate::policy::{MaskingPolicy, StrategyName};
use crate::scan::{BUILTIN_NAMES, Builtins, custom::Matcher};
use crate::strategy::{self, Strategy};
use crate::{ActiveCustom, ColumnMatch, CompiledColumn, MaskError, Masker, Problem, glob::Glob};

/// `partial` keeps this many characters unless `keep_last` says otherwise.
const DEFAULT_KEEP_LAST: usize = 4;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

pub(crate) fn compile(
    policy: &MaskingPolicy,
    hash_key: Option<&[u8]>,
) -> Result<Masker, MaskError> {
    let mut problems = Problems(Vec::new());

    // Detector ids: built-ins, then custom detectors in config order (an
    // invalid one still takes its id so later ids match the config).
    let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|s| s.to_string()).collect();
    let mut matchers: Vec<Option<Matcher>> = Vec::new();
    for (i, d) in policy.detectors.iter().enumerate() {
        let key = format!("detector[{i}]");
        if d.name.trim().is_empty() {
            problems.add(format!("{key}.name"), "empty detector name");
        } else if BUILTIN_NAMES.contains(&d.name.as_str()) {
            problems.add(
                format!("{key}.name"),
                format!("`{}` is a built-in detector", d.name),
            );
        } else if let Some(j) = policy.detectors[..i].iter().position(|o| o.name == d.name) {
            problems.add(
                format!("{key}.name"),
                format!("duplicate detector name `{}` (also detector[{j}])", d.name),
            );
        }
        let matcher = match (&d.regex, &d.words) {
            (None, None) => {
                problems.add(&key, "needs `regex` or `words`");
                None
            }
            (Some(_), Some(_)) => {
                problems.add(&key, "give either `regex` or `words`, not both");
                None
            }
            (Some(re), None) => match Matcher::regex(re) {
                Ok(m) => Some(m),
                Err(e) => {
                    problems.add(format!("{key}.regex"), e);
                    None
                }
            },
            (None, Some(words)) => {
                let mut ok = true;
                if words.is_empty() {
                    problems.add(format!("{key}.words"), "empty word list");
                    ok = false;
                }
                for (j, w) in words.iter().enumerate() {
                    if w.trim().is_empty() {
                        problems.add(format!("{key}.words[{j}]"), "empty word");
                        ok = false;
                    }
                }
                if ok {
                    match Matcher::words(words) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            problems.add(format!("{key}.words"), e);
                            None
                        }
                    }
                } else {
                    None
                }
            }
        };
        names.push(d.name.clone());
        matchers.push(matcher);
    }
    if names.len() > usize::from(u16::MAX) {
        problems.add("detector", "too many detectors");
    }

    let has_key = hash_key.is_some();
    let mut value_strategies: Vec<Option<Strategy>> = vec![None; names.len()];
    let mut used_by: Vec<Option<usize>> = vec![None; names.len()];
    for (i, rule) in policy.values.iter().enumerate() {
        let key = format!("value[{i}]");
        let strategy = strategy_of(&key, rule.strategy, rule.keep_last, has_key, &mut problems);
        // Built-ins come first in `names`, so a (refused) custom detector
        // shadowing a built-in cannot capture the built-in's rules.
        let Some(id) = names.iter().position(|n| *n == rule.detector) else {
            let custom: Vec<&str> = policy.detectors.iter().map(|d| d.name.as_str()).collect();
            let custom = if custom.is_empty() {
                String::new()
            } else {
                format!("; custom: {}", custom.join(", "))
            };
            problems.add(
                format!("{key}.detector"),
                format!(
                    "unknown detector `{}` (built-in: {}{custom})",
                    rule.detector,
                    BUILTIN_NAMES.join(", ")
                ),
            );
            continue;
        };
        if let Some(j) = used_by[id] {
            problems.add(
                format!("{key}.detector"),
                format!("detector `{}` is already used by value[{j}]", rule.detector),
            );
            continue;
        }
        used_by[id] = Some(i);
        value_strategies[id] = Some(strategy);
    }

    let mut columns = Vec::new();
    for (i, rule) in policy.columns.iter().enumerate() {
        let key = format!("column[{i}]");
        let strategy = strategy_of(&key, rule.strategy, rule.keep_last, has_key, &mut problems);
        let compiled = match (&rule.name, &rule.pattern) {
            (None, None) => {
                problems.add(&key, "needs `name` or `pattern`");
                None
            }
            (Some(_), Some(_)) => {
                problems.add(&key, "give either `name` or `pattern`, not both");
                None
            }
            (Some(name), None) => match qualified_name(name) {
                Ok(parts) => Some((name.clone(), ColumnMatch::Name(parts))),
                Err(e) => {
                    problems.add(format!("{key}.name"), e);
                    None
                }
            },
            (None, Some(pattern)) => match Glob::new(pattern) {
                Ok(g) => Some((pattern.clone(), ColumnMatch::Pattern(g))),
                Err(e) => {
                    problems.add(format!("{key}.pattern"), e);
                    None
                }
            },
        };
        if let Some((label, matcher)) = compiled {
            columns.push(CompiledColumn {
                label,
                matcher,
                strategy,
            });
        }
    }
    if policy.columns.len() > usize::from(u16::MAX) {
        problems.add("column", "too many column rules");
    }

    let uses_hash = value_strategies.contains(&Some(Strategy::Hash))
        || columns.iter().any(|c| c.strategy == Strategy::Hash);
    let hash_key = match hash_key {
        Some(key) if uses_hash => {
            let mac = strategy::hash_key(key);
            if mac.is_none() {
                problems.add("hash_key", "the key is not usable for HMAC-SHA-256");
            }
            mac
        }
        _ => None,
    };

    if !problems.0.is_empty() {
        return Err(MaskError::InvalidPolicy(problems.0));
    }

    let mut enabled = 0u16;
    for (id, s) in value_strategies
        .iter()
        .enumerate()
        .take(BUILTIN_NAMES.len())
    {
        if s.is_some() {
            enabled |= 1 << id;
        }
    }
    let customs = matchers
        .into_iter()
        .enumerate()
        .filter_map(|(k, m)| {
            let id = BUILTIN_NAMES.len() + k;
            let m = m?;
            value_strategies[id]?;
            Some(ActiveCustom {
                id: u16::try_from(id).ok()?,
                matcher: m,
            })
        })
        .collect();

    Ok(Masker {
        exempt_groups: policy.exempt_groups.clone(),
        columns,
        detector_names: names,
        value_strategies,
        value_rules: policy.values.len(),
        builtins: Builtins::new(enabled),
        customs,
        hash_key,
    })
}

fn strategy_of(
    key: &str,
    name: StrategyName,
    keep_last: Option<usize>,
    has_key: bool,
    problems: &mut Problems,
) -> Strategy {
    if keep_last.is_some() && name != StrategyName::Partial {
        problems.add(
            format!("{key}.keep_last"),
            format!(
                "only for the `partial` strategy (this rule is `{}`)",
                name.as_str()
            ),
        );
    }
    if keep_last == Some(0) && name == StrategyName::Partial {
        problems.add(
            format!("{key}.keep_last"),
            "must be at least 1 (use `redact` to keep nothing)",
        );
    }
    if name == StrategyName::Hash && !has_key {
        problems.add(
            format!("{key}.strategy"),
            "`hash` needs the deployment's masking hash key, and none is configured",
        );
    }
    match name {
        StrategyName::Redact => Strategy::Redact,
        StrategyName::Partial => Strategy::Partial {
            keep_last: keep_last.unwrap_or(DEFAULT_KEEP_LAST),
        },
        StrategyName::Hash => Strategy::Hash,
        StrategyName::Null => Strategy::Null,
    }
}

/// `schema.table.column` under PostgreSQL identifier rules: unquoted parts
/// fold to lower case, `"quoted"` parts are exact (`""` is a quote).
fn qualified_name(name: &str) -> Result<[String; 3], String> {
    const SHAPE: &str = "must be schema.table.column";
    let mut parts: Vec<String> = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("{SHAPE} (unterminated quote)")),
                }
            }
            if part.is_empty() {
                return Err(format!("{SHAPE} (empty quoted identifier)"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() || c.is_control() {
                    return Err(format!("{SHAPE} (unexpected {c:?} in an unquoted part)"));
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return Err(format!("{SHAPE} (empty part)"));
            }
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => continue,
            Some(c) => return Err(format!("{SHAPE} (unexpected {c:?} after a quoted part)")),
        }
    }
    <[String; 3]>::try_from(parts).map_err(|p| format!("{SHAPE} (found {} parts)", p.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        assert_eq!(
            qualified_name("public.users.ssn").unwrap(),
            ["public", "users", "ssn"]
        );
        assert_eq!(
            qualified_name("Public.\"Users\".SSN").unwrap(),
            ["public", "Users", "ssn"]
        );
        assert_eq!(
            qualified_name("s.\"a.b\".\"x\"\"y\"").unwrap(),
            ["s", "a.b", "x\"y"]
        );
        for bad in [
            "users.ssn",
            "a.b.c.d",
            "a..c",
            "",
            "a.b.\"c",
            "a.b.\"\"",
            "a.b. c",
            "a.\"b\"x.c",
        ] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
    }
}
