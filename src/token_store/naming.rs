//! Names in a token store: the installation a record belongs to, and the reversible encoding
//! that turns an email (or an installation name) into a file name.
//!
//! Pure; no I/O. Invariants of `encode`:
//! - every key has a name, and two keys that differ after lower-casing have different names
//!   (distinct plain encodings differ; a shortened name carries a hash of the whole key and a
//!   `~`, which no plain encoding holds);
//! - a name is never empty, never starts with a dot (hidden files are the store's own: temp
//!   files, probes, the lock), holds no `/`, NUL or control character, and is at most
//!   `MAX_NAME` bytes, so `.<name>.json.tmp-<16 hex>` still fits the 255 bytes of a file name;
//! - a name that is not shortened decodes back to the lower-cased key (`decode`).

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

/// The longest name `encode` returns, in bytes.
pub const MAX_NAME: usize = 200;
/// What a shortened name keeps of the hash of its key (hex digits).
const HASH_DIGITS: usize = 16;

/// Bytes kept as they are: the letters, digits and punctuation of everyday addresses.
fn plain(byte: u8) -> bool {
    matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'+' | b'@' | b'-')
}

/// The file-name form of `key` (an email or an installation name): lower-cased; every byte
/// outside `[a-z0-9._+@-]`, and a leading dot, as `%XX`; longer than `MAX_NAME` bytes, cut and
/// ended with `~` and 16 hex digits of the SHA-256 of the lower-cased key.
pub fn encode(key: &str) -> String {
    let lower = key.to_lowercase();
    let mut name = String::with_capacity(lower.len());
    for (i, byte) in lower.bytes().enumerate() {
        if plain(byte) && !(i == 0 && byte == b'.') {
            name.push(char::from(byte));
        } else {
            let _ = write!(name, "%{byte:02X}");
        }
    }
    if name.len() <= MAX_NAME {
        return name;
    }
    // Cut at a byte boundary that does not split a `%XX`.
    let mut cut = MAX_NAME - 1 - HASH_DIGITS;
    if let Some(percent) = name[..cut].rfind('%')
        && percent + 3 > cut
    {
        cut = percent;
    }
    name.truncate(cut);
    name.push('~');
    name.push_str(&hash_hex(&lower)[..HASH_DIGITS]);
    name
}

/// The lower-cased key a name was encoded from; `None` for a shortened name (its key is kept
/// inside the record) or something `encode` never makes.
pub fn decode(name: &str) -> Option<String> {
    if name.contains('~') {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if plain(bytes[i]) {
            out.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// Hex SHA-256 of `text`.
pub(crate) fn hash_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// The origin of an API URL, `scheme://host[:port]` (the port only when not the scheme's
/// default), lower-cased; `None` for something that is not an `http(s)` URL.
pub fn origin(api_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(api_url.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// The installation whose tokens a store reads and writes: records are kept by
/// (installation, email). A store opened for one installation never lists, overwrites or
/// deletes another's records.
///
/// Records kept before installations existed carry none; they belong to the installation
/// whose API URL has the origin of theirs (`owns_unkeyed`), and are moved under its name on
/// its next apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// Lower-cased: installation names compare as emails do.
    name: String,
    /// The origin of this run's API URL, if known.
    origin: Option<String>,
}

/// The longest installation name, in characters.
pub const MAX_INSTALLATION_NAME: usize = 100;

impl Installation {
    /// The installation of the API at `api_url`, named after its origin (the default).
    pub fn of_api(api_url: &str) -> Self {
        let origin = origin(api_url);
        let name = origin.clone().unwrap_or_else(|| api_url.trim().trim_end_matches('/').to_lowercase());
        Self { name, origin }
    }

    /// The installation `name` (`--installation`), whose API is at `api_url` when known.
    pub fn named(name: &str, api_url: Option<&str>) -> Self {
        Self { name: name.to_lowercase(), origin: api_url.and_then(origin) }
    }

    /// `--installation NAME` if given, else the API's origin.
    pub fn new(name: Option<&str>, api_url: &str) -> Self {
        match name {
            Some(name) => Self::named(name, Some(api_url)),
            None => Self::of_api(api_url),
        }
    }

    /// The lower-cased name records carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a record kept without an installation, issued by `api_url`, is this one's.
    pub fn owns_unkeyed(&self, api_url: &str) -> bool {
        self.origin.is_some() && origin(api_url) == self.origin
    }

    /// Whether `name` (of a record or a `list` entry) names this installation.
    pub fn is(&self, name: &str) -> bool {
        name.to_lowercase() == self.name
    }

    /// Why `name` cannot name an installation, if it cannot: empty, too long, or holding a
    /// control or invisible formatting character (names are shown in messages and plans).
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.trim().is_empty() {
            return Err("an installation name cannot be empty".into());
        }
        if name.chars().count() > MAX_INSTALLATION_NAME {
            return Err(format!("an installation name has at most {MAX_INSTALLATION_NAME} characters"));
        }
        if name.chars().any(|c| c.is_control() || is_format(c)) {
            return Err("an installation name cannot hold control or invisible formatting characters".into());
        }
        Ok(())
    }
}

/// Bidi controls and invisible characters that would make a name read as another.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

impl std::fmt::Display for Installation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn everyday_addresses_keep_their_lower_cased_form() {
        assert_eq!(encode("Svc-Web@Acme.example"), "svc-web@acme.example");
        assert_eq!(encode("a.b_c+tag@x.example"), "a.b_c+tag@x.example");
    }

    #[test]
    fn separators_hidden_names_and_odd_bytes_are_percent_encoded() {
        assert_eq!(encode("a/b@x.example"), "a%2Fb@x.example");
        assert_eq!(encode("\"a/../../p\"@x.example"), "%22a%2F..%2F..%2Fp%22@x.example");
        assert_eq!(encode(".hidden@x.example"), "%2Ehidden@x.example");
        assert_eq!(encode("a\0b@x.example"), "a%00b@x.example");
        assert_eq!(encode("100%@x.example"), "100%25@x.example");
        assert_eq!(encode("Ünï@x.example"), "%C3%BCn%C3%AF@x.example");
        assert_eq!(encode("http://127.0.0.1:8080"), "http%3A%2F%2F127.0.0.1%3A8080");
    }

    #[test]
    fn a_long_address_is_cut_with_a_hash_and_two_that_share_a_start_stay_apart() {
        let long = format!("{}@x.example", "a".repeat(300));
        let other = format!("{}b@x.example", "a".repeat(300));
        let (a, b) = (encode(&long), encode(&other));
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME, "{} {}", a.len(), b.len());
        assert_ne!(a, b);
        assert!(a.contains('~') && decode(&a).is_none());
        // A cut never splits a `%XX`.
        let escaped = encode(&"/".repeat(100));
        assert!(escaped.len() <= MAX_NAME && escaped.split('~').next().unwrap_or_default().ends_with("2F"));
    }

    proptest! {
        #[test]
        fn every_key_has_a_safe_name_that_decodes_back_unless_shortened(key in "\\PC{1,120}|[\\x00-\\x7f]{1,120}") {
            let name = encode(&key);
            prop_assert!(!name.is_empty() && name.len() <= MAX_NAME);
            prop_assert!(!name.starts_with('.'));
            prop_assert!(!name.bytes().any(|b| b == b'/' || b.is_ascii_control() || !b.is_ascii()));
            if !name.contains('~') {
                prop_assert_eq!(decode(&name), Some(key.to_lowercase()));
            }
        }

        #[test]
        fn two_keys_that_differ_lower_cased_never_share_a_name(a in "\\PC{1,80}", b in "\\PC{1,80}") {
            prop_assume!(a.to_lowercase() != b.to_lowercase());
            prop_assert_ne!(encode(&a), encode(&b));
        }
    }

    #[test]
    fn an_installation_is_the_api_origin_by_default() {
        let i = Installation::of_api("HTTPS://Oz.Example.com:443/api/");
        assert_eq!(i.name(), "https://oz.example.com");
        assert!(i.owns_unkeyed("https://oz.example.com/other/path"));
        assert!(!i.owns_unkeyed("https://oz.example.com:8443"));
        assert!(!i.owns_unkeyed("http://oz.example.com"));
        assert_eq!(Installation::of_api("http://127.0.0.1:8080").name(), "http://127.0.0.1:8080");
    }

    #[test]
    fn a_named_installation_owns_the_unkeyed_records_of_its_api_only() {
        let i = Installation::new(Some("EU-Prod"), "https://oz-eu.example.com");
        assert_eq!(i.name(), "eu-prod");
        assert!(i.is("eu-PROD"));
        assert!(i.owns_unkeyed("https://oz-eu.example.com/"));
        assert!(!i.owns_unkeyed("https://oz-us.example.com/"));
        assert!(!Installation::named("x", None).owns_unkeyed("https://oz-eu.example.com"));
    }

    #[test]
    fn installation_names_are_checked() {
        assert!(Installation::check_name("eu-prod").is_ok());
        for bad in ["", "  ", "a\u{202E}b", "a\nb", &"x".repeat(101)] {
            assert!(Installation::check_name(bad).is_err(), "{bad:?}");
        }
    }
}
