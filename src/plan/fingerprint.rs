//! Fingerprints of live objects: what a change was planned against. `apply --plan` recomputes
//! them from a fresh read and refuses a plan whose objects moved. Pure.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{ObservedCompany, ObservedUser};

/// A short, stable digest of a live company (all fields the API returned that we model).
pub fn company(c: &ObservedCompany) -> String {
    digest(&serde_json::to_vec(c).unwrap_or_default())
}

/// A short, stable digest of a live user.
pub fn user(u: &ObservedUser) -> String {
    digest(&serde_json::to_vec(u).unwrap_or_default())
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    // 16 bytes are plenty to notice a change; hex keeps the plan file readable.
    let mut hex = String::with_capacity(32);
    for b in &hash[..16] {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_fixture() -> ObservedUser {
        ObservedUser::sample("u1", "a@b.c", "A", "B")
    }

    #[test]
    fn same_object_same_fingerprint_and_any_change_moves_it() {
        let a = user_fixture();
        assert_eq!(user(&a), user(&a.clone()));
        let mut b = a.clone();
        b.permissions.documents = false;
        assert_ne!(user(&a), user(&b));
    }

    #[test]
    fn company_metadata_key_order_does_not_matter() {
        let c1 = ObservedCompany {
            id: "c".into(),
            name: "n".into(),
            in_deletion: false,
            technical_meta_data: serde_json::json!({"a": 1, "b": 2}),
        };
        let mut c2 = c1.clone();
        c2.technical_meta_data = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap_or_default();
        assert_eq!(company(&c1), company(&c2));
    }
}
