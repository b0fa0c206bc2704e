//! Column-name globs: `*` (any run) and `?` (one character), compared
//! case-insensitively because column names are usually folded to lower case
//! by PostgreSQL while configs are written by people.

/// A compiled glob (lower-cased characters).
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    One,
    Any,
}

impl Glob {
    /// Compile a pattern; the error is a reason for the config report.
    pub(crate) fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        let mut tokens = Vec::new();
        for c in pattern.to_lowercase().chars() {
            tokens.push(match c {
                '*' if tokens.last() == Some(&Token::Any) => continue,
                '*' => Token::Any,
                '?' => Token::One,
                '[' | ']' | '{' | '}' | '\\' => {
                    return Err(format!(
                        "`{c}` is not supported (only `*` and `?` are wildcards)"
                    ));
                }
                '.' => {
                    return Err(
                        "a pattern matches the column name alone; use `name` for schema.table.column"
                            .into(),
                    );
                }
                c if c.is_control() => return Err("control character in pattern".into()),
                c => Token::Char(c),
            });
        }
        Ok(Glob { tokens })
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.to_lowercase().chars().collect();
        let (mut t, mut n) = (0usize, 0usize);
        // Classic single-backtrack wildcard match: linear in practice, and
        // at worst O(pattern × name) on these short strings.
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Any) => {
                    star = Some((t, n));
                    t += 1;
                }
                Some(Token::One) => {
                    t += 1;
                    n += 1;
                }
                Some(Token::Char(c)) if *c == name[n] => {
                    t += 1;
                    n += 1;
                }
                _ => match star {
                    Some((st, sn)) => {
                        t = st + 1;
                        n = sn + 1;
                        star = Some((st, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[t.min(self.tokens.len())..]
            .iter()
            .all(|t| *t == Token::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn wildcards() {
        assert!(m("*ssn*", "customer_ssn"));
        assert!(m("*ssn*", "SSN"));
        assert!(m("*SSN*", "ssn_last4"));
        assert!(!m("*ssn*", "session"));
        assert!(m("email", "Email"));
        assert!(!m("email", "email2"));
        assert!(m("?", "a"));
        assert!(!m("?", "ab"));
        assert!(!m("?", ""));
        assert!(m("*", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*card_number", "credit_card_number"));
        assert!(m("ph?ne", "phone"));
    }

    #[test]
    fn bad_patterns() {
        for p in ["", "[ab]", "a\\b", "public.users.ssn", "{a,b}"] {
            assert!(Glob::new(p).is_err(), "{p}");
        }
    }
}
