//! Configuration errors as `FILE:LINE:COL: message`, one per problem.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file itself.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.col,
                self.message
            )
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects diagnostics against one file's text.
pub(crate) struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            diagnostics: Vec::new(),
        }
    }

    /// A problem at byte offset `span.start` of the file.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            col,
            message: message.into(),
        });
    }

    /// A problem with the file as a whole (no position).
    pub(crate) fn whole_file(&mut self, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.to_owned(),
            line: 0,
            col: 0,
            message: message.into(),
        });
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_col(self.text, offset).0
    }

    /// The problems found so far, for a file that cannot be read further.
    pub(crate) fn into_error(self) -> ConfigError {
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| (d.line, d.col));
        ConfigError { diagnostics }
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.diagnostics.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error())
        }
    }
}

/// 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_become_one_based_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(super::line_col(text, 0), (1, 1));
        assert_eq!(super::line_col(text, 6), (2, 1));
        assert_eq!(super::line_col(text, 10), (2, 4));
    }
}
