//! Distinguished names, compared attribute by attribute.
//!
//! A certificate's subject (or issuer) and a subject written in the configuration are both
//! parsed into the same [`Dn`]: RDNs in order, each a set of `(type, value)` attributes with
//! the type upper-cased (`cn` and `CN` are one type) and the value unescaped. Two names match
//! when their `Dn`s are equal, so `CN=ops,O=acme`, `cn=ops, o=acme` and a certificate with
//! those two attributes all match, while a single common name `ops, O=acme` never does: it is
//! one attribute whose value holds a comma. [`Dn`]'s `Display` writes the one canonical text
//! (RFC 4514 escaping, `, ` between RDNs and ` + ` within one), which is what logs and error
//! answers show.

use std::fmt;

/// A distinguished name: its RDNs in order, each with its attributes sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dn(Vec<Vec<(String, String)>>);

impl Dn {
    /// The name of a certificate's subject or issuer. `None` when a value is not a string.
    #[must_use]
    pub fn of(name: &x509_parser::x509::X509Name<'_>) -> Option<Self> {
        use x509_parser::objects::{oid_registry, oid2abbrev};
        let rdns = name
            .iter_rdn()
            .map(|rdn| {
                rdn.iter()
                    .map(|a| {
                        let kind = oid2abbrev(a.attr_type(), oid_registry())
                            .map_or_else(|_| a.attr_type().to_id_string(), str::to_owned);
                        Some((kind.to_ascii_uppercase(), a.as_str().ok()?.to_owned()))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self::new(rdns))
    }

    fn new(mut rdns: Vec<Vec<(String, String)>>) -> Self {
        for rdn in &mut rdns {
            rdn.sort();
        }
        Self(rdns)
    }

    /// Parses a name written as RFC 4514 says (`CN=ops, O=acme`; `\,` or `\2C` for a comma in
    /// a value; `+` between the attributes of one RDN), in the order written. Spaces around
    /// `,`, `+` and `=` are ignored; a type is a keyword (`CN`, `O`, `OU`…, any case) or a
    /// dotted OID.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rdns = Vec::new();
        let mut rdn = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            let mut kind = String::new();
            loop {
                match chars.next() {
                    Some('=') => break,
                    Some(c) => kind.push(c),
                    None => {
                        return Err(format!(
                            "`{}` has no `=` (an attribute is written like `CN=ops`)",
                            kind.trim()
                        ));
                    }
                }
            }
            let kind = kind.trim();
            let keyword = kind.starts_with(|c: char| c.is_ascii_alphabetic())
                && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let oid = !kind.is_empty()
                && kind
                    .split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !keyword && !oid {
                return Err(if kind.is_empty() {
                    "an attribute without a type (like `CN=ops`)".to_owned()
                } else {
                    format!("`{kind}` is not an attribute type (like CN, O, OU or 2.5.4.3)")
                });
            }
            while chars.next_if(|&c| c == ' ').is_some() {}
            if chars.peek() == Some(&'#') {
                return Err(format!(
                    "the value of {kind} is in BER (`#…`); write it as a string"
                ));
            }
            let (value, end) = value(&mut chars)?;
            if value.is_empty() {
                return Err(format!("{kind} has an empty value"));
            }
            rdn.push((kind.to_ascii_uppercase(), value));
            match end {
                Some('+') => {}
                Some(_) => rdns.push(std::mem::take(&mut rdn)),
                None => {
                    rdns.push(rdn);
                    return Ok(Self::new(rdns));
                }
            }
        }
    }
}

/// One attribute value up to an unescaped `,`, `+` or the end (which it returns), unescaped,
/// without the spaces before that end.
fn value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<(String, Option<char>), String> {
    let mut bytes = Vec::new();
    // Bytes up to here are kept even when spaces: they were escaped.
    let mut kept = 0;
    while let Some(c) = chars.next() {
        match c {
            ',' | '+' => {
                bytes.truncate(trimmed(&bytes, kept));
                return decode(bytes).map(|v| (v, Some(c)));
            }
            '\\' => {
                let Some(next) = chars.next() else {
                    return Err("a value ends in `\\`".to_owned());
                };
                if next.is_ascii_hexdigit() {
                    let low = chars
                        .next()
                        .filter(char::is_ascii_hexdigit)
                        .ok_or("`\\` takes a special character or two hexadecimal digits")?;
                    let pair = [next, low].iter().collect::<String>();
                    bytes.push(u8::from_str_radix(&pair, 16).map_err(|e| e.to_string())?);
                } else if matches!(next, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | ' ' | '#') {
                    bytes.extend_from_slice(next.encode_utf8(&mut [0; 4]).as_bytes());
                } else {
                    return Err(format!("`\\{next}` is not an escape"));
                }
                kept = bytes.len();
            }
            '"' | ';' | '<' | '>' | '\0' => {
                return Err(format!("`{}` must be escaped in a value", c.escape_default()));
            }
            _ => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    bytes.truncate(trimmed(&bytes, kept));
    decode(bytes).map(|v| (v, None))
}

/// The length of `bytes` without its trailing spaces, but not shorter than `kept`.
fn trimmed(bytes: &[u8], kept: usize) -> usize {
    let unspaced = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    unspaced.max(kept)
}

fn decode(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "escaped bytes that are not UTF-8".to_owned())
}

impl fmt::Display for Dn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rdn) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, (kind, value)) in rdn.iter().enumerate() {
                if j > 0 {
                    f.write_str(" + ")?;
                }
                write!(f, "{kind}={}", Escaped(value))?;
            }
        }
        Ok(())
    }
}

/// A value escaped as RFC 4514 section 2.4 says.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.0.chars().count().saturating_sub(1);
        for (i, c) in self.0.chars().enumerate() {
            let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
                || (i == 0 && matches!(c, '#' | ' '))
                || (i == last && c == ' ');
            if c == '\0' {
                f.write_str("\\00")?;
            } else {
                if special {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(dn: &str) -> String {
        Dn::parse(dn).unwrap_or_else(|e| panic!("{dn}: {e}")).to_string()
    }

    #[test]
    fn spacing_case_and_attribute_order_within_an_rdn_do_not_matter() {
        assert_eq!(text("cn=ops,o=acme"), "CN=ops, O=acme");
        assert_eq!(text(" CN = ops ,  O=acme "), "CN=ops, O=acme");
        assert_eq!(text("OU=b + CN=a, O=x"), "CN=a + OU=b, O=x");
        assert_eq!(Dn::parse("CN=a+OU=b").ok(), Dn::parse("ou=b + cn=a").ok());
        assert_eq!(text("2.5.4.3=x"), "2.5.4.3=x");
    }

    #[test]
    fn an_escaped_separator_is_part_of_the_value() {
        let crafted = Dn::parse(r"CN=ops\, O=acme").expect("one attribute");
        assert_eq!(crafted.0, [[("CN".to_owned(), "ops, O=acme".to_owned())]]);
        assert_ne!(Some(crafted), Dn::parse("CN=ops, O=acme").ok());
        assert_eq!(
            Dn::parse(r"CN=ops\2C O=acme").ok(),
            Dn::parse(r"CN=ops\, O=acme").ok()
        );
        assert_eq!(text(r"CN=a\+b\\c"), r"CN=a\+b\\c");
        assert_eq!(text(r"CN=\ lead and trail\ "), r"CN=\ lead and trail\ ");
        assert_eq!(text(r"CN=caf\C3\A9"), "CN=café");
    }

    #[test]
    fn what_is_not_a_name_is_refused_with_why() {
        for (bad, why) in [
            ("ops", "has no `=`"),
            ("=ops", "without a type"),
            ("C N=ops", "not an attribute type"),
            ("CN=", "empty value"),
            ("CN=ops,", "has no `=`"),
            ("CN=#0403", "BER"),
            (r"CN=a\", "ends in"),
            (r"CN=a\q", "not an escape"),
            (r"CN=a\4", "hexadecimal"),
            (r"CN=\FF", "not UTF-8"),
            ("CN=a;b", "must be escaped"),
            ("CN=\"a\"", "must be escaped"),
        ] {
            let e = Dn::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_rendered_name_parses_back_to_itself() {
        for dn in [
            r"CN=ops\, O=acme",
            r"CN=\#1 + OU=x\;y, O=a\<b\>",
            r"CN=\ x\ ",
            "CN=a=b",
        ] {
            let parsed = Dn::parse(dn).expect(dn);
            assert_eq!(Dn::parse(&parsed.to_string()).as_ref(), Ok(&parsed), "{dn}");
        }
    }
}
