//! The one way an error is written on a single line: the error and its chain of causes,
//! joined by ": ", for logs, events and diagnostics that must stand alone.

use std::error::Error;
use std::fmt;

/// `err` and its causes as one line (`upsert 2 workers: ...: database or disk is full`).
///
/// A cause whose text the line already ends with is said once: drivers often repeat their
/// message in their source.
pub fn chain(err: &dyn Error) -> Chain<'_> {
    Chain {
        err,
        lowercase: false,
    }
}

/// An error with its causes; see [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    err: &'a dyn Error,
    lowercase: bool,
}

impl Chain<'_> {
    /// Writes the causes in lower case (after the first, which stays as the error says it), as
    /// a sentence of a diagnostic reads.
    pub fn lowercase_causes(self) -> Self {
        Self {
            lowercase: true,
            ..self
        }
    }
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.err.to_string();
        let mut source = self.err.source();
        while let Some(cause) = source {
            let mut cause_text = cause.to_string();
            if self.lowercase {
                cause_text = cause_text.to_lowercase();
            }
            if !text.ends_with(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(msg: &'static str, source: Option<E>) -> E {
        E {
            msg,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn causes_follow_the_error_joined_by_colons() {
        let err = e(
            "upsert 2 workers",
            Some(e("write", Some(e("Disk Full", None)))),
        );
        assert_eq!(
            chain(&err).to_string(),
            "upsert 2 workers: write: Disk Full"
        );
        assert_eq!(
            chain(&err).lowercase_causes().to_string(),
            "upsert 2 workers: write: disk full"
        );
    }

    #[test]
    fn a_cause_the_line_already_ends_with_is_said_once() {
        let err = e(
            "query: database is locked",
            Some(e("database is locked", None)),
        );
        assert_eq!(chain(&err).to_string(), "query: database is locked");
    }
}
