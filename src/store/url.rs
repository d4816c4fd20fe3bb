//! `database.url`: parsed once, and never shown with its password. Its
//! `Display` and `Debug` redact it, and so does every message about a URL
//! that does not parse, whatever it looks like (`postgress://u:pw@h`, a
//! leading space, the libpq `host=... password=...` form): `check-config`
//! runs as `ExecStartPre`, so what it prints lands in the journal.

use std::fmt;
use std::path::PathBuf;

use super::{Result, StoreError};

/// A parsed `database.url`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum DatabaseUrl {
    /// `sqlite:PATH` (relative paths are relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://...` / `postgresql://...` (the scheme in any case), or
    /// libpq's `key=value` form (`host=db dbname=radius user=radius ...`).
    Postgres(PgUrl),
}

/// A PostgreSQL connection string; only [`PgUrl::expose`] shows it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// The string to connect with. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({:?})", redact(&self.0))
    }
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config(
                    "database.url \"sqlite:\" needs a file path".into(),
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
        for scheme in ["postgres://", "postgresql://"] {
            if lower.starts_with(scheme) {
                // libpq and tokio-postgres want the scheme in lower case.
                return Ok(DatabaseUrl::Postgres(PgUrl(format!(
                    "{scheme}{}",
                    &url[scheme.len()..]
                ))));
            }
        }
        let key_value = url.split_whitespace().all(|kv| kv.contains('='))
            && url
                .split_whitespace()
                .any(|kv| kv.starts_with("host=") || kv.starts_with("dbname="));
        if !url.is_empty() && !url.contains("://") && key_value {
            return Ok(DatabaseUrl::Postgres(PgUrl(url.to_owned())));
        }
        Err(StoreError::Config(format!(
            "database.url {:?} is neither sqlite:PATH nor postgres://... (nor host=... dbname=...)",
            redact(url)
        )))
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self> {
        DatabaseUrl::parse(&s)
    }
}

impl Default for DatabaseUrl {
    fn default() -> Self {
        DatabaseUrl::Sqlite(PathBuf::from("./shardius.db"))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.to_string())
    }
}

/// `text` with every password it may hold replaced by `***`: the part
/// after `user:` in `scheme://user:password@host` (any scheme, even a
/// misspelt one) and in a bare `user:password@host`, and the value of
/// every `password=` (libpq key/value form, URL query). For messages that
/// quote a URL or a config line; not a parser.
pub fn redact(text: &str) -> String {
    let mut out = redact_userinfo(text);
    out = redact_key(&out, "password");
    out
}

fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices('@') {
        if at < last {
            continue;
        }
        // The token the '@' ends: back to whitespace, a quote or '='.
        let start = text[last..at]
            .rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=')
            .map_or(last, |i| last + i + 1);
        let token = &text[start..at];
        // The user info: after "://", or (a scheme misspelt as "x:/")
        // after the last '/'; a path such as "sqlite:./a@b" has no ':' there.
        let userinfo_start = match token.find("://") {
            Some(i) => i + 3,
            None => token.rfind('/').map_or(0, |i| i + 1),
        };
        let Some(colon) = token[userinfo_start..].find(':') else {
            continue;
        };
        let secret_start = start + userinfo_start + colon + 1;
        out.push_str(&text[last..secret_start]);
        out.push_str("***");
        last = at;
    }
    out.push_str(&text[last..]);
    out
}

fn redact_key(text: &str, key: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(key) {
        let key_start = from + found;
        from = key_start + key.len();
        let rest = &text[from..];
        let eq = rest.len() - rest.trim_start().len();
        if !rest[eq..].starts_with('=') {
            continue;
        }
        let value_start = from + eq + 1;
        let value = &text[value_start..];
        let skip = value.len() - value.trim_start().len();
        let value_start = value_start + skip;
        let value = &text[value_start..];
        let value_len = match value.chars().next() {
            Some(q @ ('\'' | '"')) => value[1..].find(q).map_or(value.len(), |i| i + 2),
            _ => value
                .find(|c: char| c.is_whitespace() || c == '&' || c == '"' || c == '\'')
                .unwrap_or(value.len()),
        };
        out.push_str(&text[last..value_start]);
        out.push_str("***");
        last = value_start + value_len;
        from = last;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_backends() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:./shardius.db").unwrap(),
            DatabaseUrl::Sqlite("./shardius.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/shardius/db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/shardius/db".into())
        );
        for url in [
            "postgres://u@h/db",
            " Postgres://u:p@h/db",
            "POSTGRESQL://u@h/db",
            "host=db dbname=radius user=radius password=x",
        ] {
            assert!(
                matches!(DatabaseUrl::parse(url), Ok(DatabaseUrl::Postgres(_))),
                "{url}"
            );
        }
        match DatabaseUrl::parse(" Postgres://u:p@h/db").unwrap() {
            DatabaseUrl::Postgres(u) => assert_eq!(u.expose(), "postgres://u:p@h/db"),
            other => panic!("{other:?}"),
        }
        for bad in [
            "mysql://x",
            "sqlite:",
            "",
            "pg://u:p@h",
            "postgress://u:p@h/db",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_form_of_url_shows_its_password() {
        let secret = "HuntEr2";
        for text in [
            "postgres://radius:HuntEr2@db:5432/radius",
            "postgress://radius:HuntEr2@db/radius",
            "Postgres://radius:HuntEr2@db/radius",
            " postgres://radius:HuntEr2@db/radius",
            "pg://radius:HuntEr2@db/radius",
            "radius:HuntEr2@db/radius",
            "host=db user=radius password=HuntEr2 dbname=radius",
            "host=db password = 'Hunt Er2' dbname=radius",
            "postgres://db/radius?user=radius&password=HuntEr2",
            "postgres://radius:HuntEr2@db/radius?password=HuntEr2",
            "url = \"postgress://radius:HuntEr2@db/radius\"",
            "Postgres:/radius:HuntEr2@db/radius",
            "postgres://radius:Hunt/Er2@db/radius",
        ] {
            let shown = redact(text);
            assert!(
                !shown.contains(secret) && !shown.contains("Er2"),
                "{text} → {shown}"
            );
            if let Err(e) = DatabaseUrl::parse(text) {
                assert!(!e.to_string().contains("Er2"), "{e}");
            }
        }
        assert_eq!(
            redact("postgres://radius:x@db:5432/radius"),
            "postgres://radius:***@db:5432/radius"
        );
        assert_eq!(
            redact("postgres://radius@db/radius"),
            "postgres://radius@db/radius"
        );
        assert_eq!(redact("sqlite:./a@b.db"), "sqlite:./a@b.db");
        let url = DatabaseUrl::parse("postgres://radius:HuntEr2@db/radius").unwrap();
        assert_eq!(url.to_string(), "postgres://radius:***@db/radius");
        assert!(!format!("{url:?}").contains(secret));
    }
}
