//! How a refused config is reported (every problem with its field path and line), and the
//! environment overrides the loader reads.

/// One reason the config was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `route[2].upstream`, or `env HTTP_PORT`.
    pub field: String,
    pub line: Option<usize>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", format_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

pub(super) fn format_problems(file: &str, problems: &[Problem]) -> String {
    let mut s = format!("{} problem(s) in {file}:", problems.len());
    for p in problems {
        match p.line {
            Some(l) => s.push_str(&format!("\n  {file}:{l}: {}: {}", p.field, p.reason)),
            None => s.push_str(&format!("\n  {file}: {}: {}", p.field, p.reason)),
        }
    }
    s
}

/// The environment overrides the loader honours; a trait object so tests need not touch the
/// process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;
impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|s| s.to_string())
    }
}
