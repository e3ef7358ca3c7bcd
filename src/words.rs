//! How messages count things: `count(3, "user", "users")` is `3 users` and `count(1, "company",
//! "companies")` is `1 company`. Real plurals, never `user(s)` or `compan(ies)`: the caller names
//! both forms, since English plurals do not follow one rule. Pure.

/// `n` and the noun that agrees with it.
pub fn count<N: std::fmt::Display + PartialEq + From<u8> + Copy>(n: N, one: &str, many: &str) -> String {
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_takes_the_singular_and_every_other_number_the_plural() {
        assert_eq!(count(1_u32, "company", "companies"), "1 company");
        assert_eq!(count(0_u32, "company", "companies"), "0 companies");
        assert_eq!(count(2_usize, "user", "users"), "2 users");
        assert_eq!(count(1_u64, "day", "days"), "1 day");
    }
}
