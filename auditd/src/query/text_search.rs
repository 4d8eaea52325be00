//! Substring search (`q`) that keeps the trigram index to useful work.
//!
//! With the optional trigram index (`auditd text-index`), PostgreSQL answers
//! `message ILIKE '%edge-4242 %'` by intersecting the index entries of every trigram of
//! the pattern. A trigram that nearly every message contains (`edg` and `dge`, when every
//! message names an edge device) rules nothing out, yet costs a descent into its long
//! posting tree for each candidate row: most of such a query's time (BENCHMARKS.md, "Query
//! and export"). PostgreSQL keeps no statistics on trigrams, so auditd keeps a small
//! random sample of messages and searches the index only for the parts of `q` that are
//! rare in it. The whole pattern is still checked on every candidate row, so the rows
//! found are the same; only the work to find them changes. Only ASCII searches are
//! narrowed (see [`MessageSample::index_patterns`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::Client;

use crate::replaceable::Replaceable;

/// Messages sampled at random when there are more.
pub const SAMPLE_SIZE: usize = 2000;

/// Below this many sampled messages the table is too small for the search to need help,
/// and the sample too small to judge by.
const MIN_SAMPLE: usize = 200;

/// Parts of `q` judged at most: each is looked for in the whole sample, on the request's
/// thread, and a `q` of 1,024 bytes could hold hundreds. Parts after these are left to the
/// check of the whole pattern.
const MAX_PIECES: usize = 16;

/// A part of `q` found in at least this share of the sample is common: its trigrams
/// would narrow the candidates by less than they cost.
const COMMON_SHARE: f64 = 0.25;

/// Lower-cased messages drawn at random from `audit_logs`, when the trigram index is
/// complete; empty otherwise (then searches are left as they are).
#[derive(Debug, Default, Clone)]
pub struct MessageSample {
    lowercase: Vec<String>,
}

impl MessageSample {
    /// A sample of the given messages.
    pub fn from_messages<S: AsRef<str>>(messages: impl IntoIterator<Item = S>) -> Self {
        MessageSample {
            lowercase: messages
                .into_iter()
                .map(|m| m.as_ref().to_lowercase())
                .collect(),
        }
    }

    /// Draws up to [`SAMPLE_SIZE`] messages at random, if the trigram index is complete
    /// (without it there is nothing to tune). Reads catalogs and `audit_logs` only, so a
    /// read-only role can take it.
    pub async fn take(client: &Client) -> Result<MessageSample> {
        if !audit_layer::schema::text_index::is_complete(client).await? {
            return Ok(MessageSample::default());
        }
        // Row counts as of the last (auto)vacuum or analyze; -1 means never counted.
        let rows: f64 = client
            .query_one(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 \
                 FROM pg_partition_tree('audit_logs') t JOIN pg_class c ON c.oid = t.relid \
                 WHERE t.isleaf",
                &[],
            )
            .await?
            .get(0);
        // SYSTEM sampling draws whole pages: ask for a few times the rows wanted, since
        // a page's rows were written together and are alike.
        let percent = if rows <= 0.0 {
            100.0
        } else {
            (100.0 * 4.0 * SAMPLE_SIZE as f64 / rows).min(100.0) as f32
        };
        let messages = client
            .query(
                "SELECT message FROM audit_logs TABLESAMPLE SYSTEM ($1) LIMIT $2",
                &[&percent, &(SAMPLE_SIZE as i64)],
            )
            .await?;
        Ok(MessageSample::from_messages(
            messages.iter().map(|row| row.get::<_, &str>(0)),
        ))
    }

    /// How many messages the sample holds.
    pub fn len(&self) -> usize {
        self.lowercase.len()
    }

    /// The `ILIKE` patterns to look up in the index for `q`: its parts that are rare in
    /// the sample, each with the separators around it. Empty when the whole pattern
    /// should be looked up as it is: `q` is not ASCII, the sample is too small, or no
    /// part of `q` is common, or every part is.
    ///
    /// Each pattern is a piece of `q` between `%`s, so every message that contains `q`
    /// matches it: narrowing the lookup never loses a row. That holds because ILIKE
    /// lower-cases ASCII one character at a time; beyond ASCII, a collation may lower a
    /// character by its neighbours (a Greek capital sigma at the end of a word, under
    /// ICU), so a piece cut out of `q` could lower differently from the same characters
    /// inside it, and a matching row be lost.
    pub fn index_patterns(&self, q: &str) -> Vec<String> {
        if self.lowercase.len() < MIN_SAMPLE || !q.is_ascii() {
            return Vec::new();
        }
        let mut rare = Vec::new();
        let mut any_common = false;
        for piece in word_pieces(q).into_iter().take(MAX_PIECES) {
            let needle = piece.to_lowercase();
            let found = self
                .lowercase
                .iter()
                .filter(|m| m.contains(&needle))
                .count();
            if found as f64 >= COMMON_SHARE * self.lowercase.len() as f64 {
                any_common = true;
            } else {
                let pattern = like_containing(piece);
                if !rare.contains(&pattern) {
                    rare.push(pattern);
                }
            }
        }
        if any_common {
            rare
        } else {
            Vec::new()
        }
    }
}

/// The pieces of `q` that pg_trgm makes trigrams of: each run of letters and digits,
/// with the character before and after it (when `q` has them), since a word's edges are
/// trigrams too (`42 ` in `4242 `).
fn word_pieces(q: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = q.char_indices().collect();
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].1.is_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].1.is_alphanumeric() {
            i += 1;
        }
        let from = chars[start.saturating_sub(1)].0;
        let to = chars.get(i + 1).map_or(q.len(), |(at, _)| *at);
        pieces.push(&q[from..to]);
    }
    pieces
}

/// The `LIKE`/`ILIKE` pattern for "contains `text`": its `\`, `%` and `_` escaped.
pub fn like_containing(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The sample requests read, and that [`renew_periodically`] replaces.
pub type SharedSample = Replaceable<MessageSample>;

/// Takes a sample now and then every `interval`, until the task is dropped. A failure
/// (the database restarting) keeps the previous sample and is reported; searches stay
/// correct with any sample, or none.
pub async fn renew_periodically(
    pool: deadpool_postgres::Pool,
    shared: Arc<SharedSample>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let attempt = async {
            let client = pool.get().await?;
            MessageSample::take(&client).await
        };
        match tokio::time::timeout(Duration::from_secs(60), attempt).await {
            Ok(Ok(sample)) => {
                tracing::debug!(messages = sample.len(), "text search sample taken");
                shared.replace(sample);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot sample messages for text search"),
            Err(_) => tracing::warn!("sampling messages for text search took over 60s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rare_parts_of_a_search_are_looked_up() {
        let sample = MessageSample::from_messages(
            (0..1000).map(|i| format!("Device edge-{i} event number {}", i * 7)),
        );
        // "edge-" is in every message: only the rare part is looked up in the index.
        assert_eq!(sample.index_patterns("edge-4242 "), vec!["%-4242 %"]);
        // Nothing is common, or everything is: the whole pattern is looked up as it is.
        assert!(sample.index_patterns("router-77").is_empty());
        assert!(sample.index_patterns("edge-").is_empty());
    }

    #[test]
    fn pieces_are_words_with_their_edges() {
        assert_eq!(word_pieces("edge-4242 "), vec!["edge-", "-4242 "]);
        assert_eq!(word_pieces("a b"), vec!["a ", " b"]);
        assert_eq!(word_pieces("--"), Vec::<&str>::new());
        assert_eq!(word_pieces("Größe-ß"), vec!["Größe-", "-ß"]);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_containing(r"50%_o\ff"), r"%50\%\_o\\ff%");
    }

    #[test]
    fn common_parts_are_judged_case_insensitively() {
        let sample = MessageSample::from_messages((0..300).map(|i| format!("LOGIN by user{i}")));
        assert_eq!(sample.index_patterns("login by user7"), vec!["% user7%"]);
        assert_eq!(sample.index_patterns("Login BY User7"), vec!["% User7%"]);
    }

    #[test]
    fn only_the_first_parts_of_a_long_search_are_judged() {
        let sample = MessageSample::from_messages((0..300).map(|i| format!("at edge edge {i}")));
        let long = format!("edge {} rare", "edge ".repeat(MAX_PIECES));
        assert!(sample.index_patterns(&long).is_empty());
        let short = format!("edge {} rare", "edge ".repeat(MAX_PIECES - 2));
        assert_eq!(sample.index_patterns(&short), vec!["% rare%"]);
    }

    #[test]
    fn a_search_beyond_ascii_is_never_narrowed() {
        let sample = MessageSample::from_messages((0..300).map(|i| format!("edge-{i} ΑΣ")));
        assert!(sample.index_patterns("edge-ΑΣ.Β ").is_empty());
        assert_eq!(sample.index_patterns("edge-4242 "), vec!["%-4242 %"]);
    }

    #[test]
    fn a_small_sample_changes_nothing() {
        let sample = MessageSample::from_messages((0..10).map(|i| format!("edge-{i}")));
        assert!(sample.index_patterns("edge-4242").is_empty());
    }
}
