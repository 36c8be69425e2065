//! Reading and validating a spec file, with errors that name file, line, column and the fix.

use std::path::{Path, PathBuf};

use super::EngineUpgrade;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}{}", file.display(), hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

pub fn parse_spec(_text: &str, _file: &Path) -> Result<EngineUpgrade, SpecError> {
    todo!("spec parsing")
}

pub fn load_spec_file(file: &Path) -> Result<EngineUpgrade, SpecError> {
    let text = std::fs::read_to_string(file).map_err(|e| SpecError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read the spec file: {e}"),
        hint: Some("check the path given to --spec".into()),
    })?;
    parse_spec(&text, file)
}
