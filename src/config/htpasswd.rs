//! htpasswd files as Apache's `htpasswd` writes them: `user:hash`, one a
//! line. Only slow, salted hashes are taken: bcrypt (`$2y$`, `$2a$`, `$2b$`,
//! `htpasswd -B`) and argon2 (PHC strings, `$argon2id$…`). MD5 (`$apr1$`),
//! SHA-1 (`{SHA}`), crypt and plain passwords are refused at load, naming
//! the line: they are cheap to guess from a leaked file.

use std::str::FromStr;

/// One user of an htpasswd file; the hash is checked to be well formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub hash: String,
    pub kind: HashKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    Bcrypt,
    Argon2,
}

const HOW: &str = "relais reads bcrypt and argon2 hashes only: make a bcrypt one with `htpasswd -B FILE USER`";

/// The users of an htpasswd file's text, or what is wrong with which line.
pub(crate) fn parse(text: &str) -> Result<Vec<User>, String> {
    let mut users: Vec<User> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {n}: not `user:hash`"));
        };
        if name.is_empty() {
            return Err(format!("line {n}: no user name"));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(format!("line {n}: user {name:?} is listed twice"));
        }
        let kind = kind(hash).map_err(|why| format!("line {n}: user {name:?}: {why}"))?;
        users.push(User { name: name.to_string(), hash: hash.to_string(), kind });
    }
    if users.is_empty() {
        return Err("holds no users".into());
    }
    Ok(users)
}

/// The kind of a well-formed hash, or why it is refused.
fn kind(hash: &str) -> Result<HashKind, String> {
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
        return match bcrypt::HashParts::from_str(hash) {
            Ok(_) => Ok(HashKind::Bcrypt),
            Err(e) => Err(format!("not a valid bcrypt hash ({e})")),
        };
    }
    if hash.starts_with("$argon2") {
        return match argon2::PasswordHash::new(hash) {
            Ok(h) if argon2::Algorithm::try_from(h.algorithm).is_ok() && h.hash.is_some() => Ok(HashKind::Argon2),
            Ok(_) => Err("not an argon2 hash with its output".into()),
            Err(e) => Err(format!("not a valid argon2 PHC string ({e})")),
        };
    }
    let what = if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        "an MD5 hash (htpasswd's default before 2.4, or -m)"
    } else if hash.starts_with("{SHA}") {
        "an unsalted SHA-1 hash (htpasswd -s)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-crypt hash, which relais does not read"
    } else if hash.len() == 13 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/') {
        "a DES crypt hash (htpasswd -d), which keeps 8 characters of a password"
    } else {
        "a plain password or a hash relais does not know (htpasswd -p)"
    };
    Err(format!("{what}; {HOW}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_argon2_are_read_and_weak_hashes_are_refused_by_line() {
        let bcrypt = bcrypt::hash("pw", 4).unwrap();
        let argon = "$argon2id$v=19$m=16,t=2,p=1$c29tZXNhbHQ$kVX0yKg3Ea4WQ8/5ubLP3Q";
        let users = parse(&format!("# admins\nann:{bcrypt}\n\nbob:{argon}\r\n")).unwrap();
        assert_eq!(
            users.iter().map(|u| (u.name.as_str(), u.kind)).collect::<Vec<_>>(),
            [("ann", HashKind::Bcrypt), ("bob", HashKind::Argon2)]
        );
        for (line, what) in [
            ("cy:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "MD5"),
            ("cy:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("cy:rOoGQ0yN4cEQk", "DES"),
            ("cy:secret", "plain"),
            ("cy:$2y$10$short", "bcrypt"),
            ("cy", "user:hash"),
        ] {
            let e = parse(&format!("ann:{bcrypt}\n{line}\n")).unwrap_err();
            assert!(e.starts_with("line 2: ") && e.contains(what), "{line}: {e}");
        }
        assert!(parse("# nobody\n").is_err());
    }
}
