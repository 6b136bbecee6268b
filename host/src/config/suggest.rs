//! "Did you mean `command`?": the closest known name to a misspelt key or value, by
//! edit distance, from the names serde lists in its refusal.

/// The number of single-character insertions, deletions and substitutions that turn
/// `a` into `b` (Levenshtein), one row of the table at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// The candidate nearest to `word`, if it is near enough to be what was meant: at most
/// a third of the word's letters changed (two for a short word).
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    nearest(word, candidates).map(|(_, c)| c)
}

/// [`closest`] with its distance.
fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<(usize, &'a str)> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(&word.to_ascii_lowercase(), c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
}

/// The keys `T` takes, as serde names them when it refuses an unknown one: what a key
/// misspelt at another level of the file is compared with.
pub(super) fn keys_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    let Err(refused) = toml::from_str::<T>("__no_such_key__ = 0") else {
        return Vec::new();
    };
    refused
        .message()
        .split('`')
        .skip(1)
        .step_by(2)
        .skip(1)
        .map(str::to_owned)
        .collect()
}

/// As [`did_you_mean`], and when the unknown key is nearer a key of another level of
/// the file (`other`) than any of its own, that one, saying where it belongs
/// (`belongs`: "a per-plugin key: ...").
pub(super) fn did_you_mean_across(message: &str, other: &[&str], belongs: &str) -> Option<String> {
    let unknown = message.strip_prefix("unknown field `")?.split('`').next()?;
    let known: Vec<&str> = message.split('`').skip(3).step_by(2).collect();
    let here = nearest(unknown, &known);
    match (here, nearest(unknown, other)) {
        (Some((d, _)), Some((o, _))) if d <= o => did_you_mean(message),
        (_, Some((_, near))) => Some(format!(
            "unknown key `{unknown}`; did you mean `{near}`? `{near}` is {belongs}"
        )),
        _ => did_you_mean(message),
    }
}

/// serde's refusal of an unknown key or value (``unknown field `comand`, expected one of
/// `command`, ...``) as a suggestion of the nearest known one; `None` for any other
/// message, or when nothing known is near.
pub(super) fn did_you_mean(message: &str) -> Option<String> {
    let what = if message.starts_with("unknown field `") {
        "key"
    } else if message.starts_with("unknown variant `") {
        "value"
    } else {
        return None;
    };
    // The names are the odd pieces between backticks: the unknown one, then the known.
    let mut quoted = message.split('`').skip(1).step_by(2);
    let unknown = quoted.next()?;
    let known: Vec<&str> = quoted.collect();
    let near = closest(unknown, &known)?;
    Some(format!(
        "unknown {what} `{unknown}`; did you mean `{near}`?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_count_single_edits() {
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("command", "command"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("calltimeout_ms", "call_timeout_ms"), 1);
    }

    #[test]
    fn misspelt_keys_and_values_get_the_nearest_known_name() {
        let serde = "unknown field `comand`, expected one of `command`, `args`, `cwd`";
        assert_eq!(
            did_you_mean(serde).as_deref(),
            Some("unknown key `comand`; did you mean `command`?")
        );
        let serde = "unknown variant `prodution`, expected `dev` or `production`";
        assert_eq!(
            did_you_mean(serde).as_deref(),
            Some("unknown value `prodution`; did you mean `production`?")
        );
        // Case is forgiven.
        let serde = "unknown field `Command`, expected one of `command`, `args`";
        assert!(did_you_mean(serde).is_some_and(|m| m.ends_with("`command`?")));
        // Nothing near: serde's own list stays.
        assert_eq!(
            did_you_mean("unknown field `retries`, expected one of `command`, `args`"),
            None
        );
        assert_eq!(did_you_mean("invalid type: string, expected u64"), None);
    }

    #[test]
    fn a_key_nearer_one_of_another_level_says_where_it_belongs() {
        let top = "unknown field `chekpoint_interval_ms`, expected one of `socket`, `poll_interval_ms`, `plugins`";
        let plugin_keys = ["command", "checkpoint_interval_ms", "call_timeout_ms"];
        assert_eq!(
            did_you_mean_across(top, &plugin_keys, "a per-plugin key").as_deref(),
            Some(
                "unknown key `chekpoint_interval_ms`; did you mean `checkpoint_interval_ms`? `checkpoint_interval_ms` is a per-plugin key"
            )
        );
        // Nearer its own level: that one.
        let top = "unknown field `pol_interval_ms`, expected one of `socket`, `poll_interval_ms`";
        assert_eq!(
            did_you_mean_across(top, &plugin_keys, "a per-plugin key").as_deref(),
            Some("unknown key `pol_interval_ms`; did you mean `poll_interval_ms`?")
        );
        assert!(
            keys_of::<crate::config::PluginConfig>().contains(&"checkpoint_interval_ms".to_owned())
        );
        assert!(keys_of::<crate::config::Config>().contains(&"poll_interval_ms".to_owned()));
    }
}
