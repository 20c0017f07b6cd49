//! The one owner of validate's output files (as hyperfine's ExportManager): each is created
//! when the options are resolved, before any work, so that an unwritable path fails in a
//! second; each is written once at the end; and if the run ends in an error, every one of them
//! is removed, so that no empty or partial file poses as a report.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One output file, open for writing.
pub struct Export {
    path: PathBuf,
    file: File,
    /// What it holds, for messages: "report", "JUnit XML", "HTML report".
    what: &'static str,
}

impl Export {
    pub fn create(path: PathBuf, what: &'static str) -> Result<Export> {
        let file =
            File::create(&path).with_context(|| format!("cannot write the {what} to {}", path.display()))?;
        Ok(Export { path, file, what })
    }

    /// Writes `text` to the file, consuming it.
    pub fn write(self, text: &str) -> Result<()> {
        let Export { path, mut file, what } = self;
        file.write_all(text.as_bytes()).with_context(|| format!("writing the {what} to {}", path.display()))
    }

    /// `DIR/index.html`, creating DIR.
    pub fn create_in_dir(dir: &Path, name: &str, what: &'static str) -> Result<Export> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the report directory {}", dir.display()))?;
        Export::create(dir.join(name), what)
    }
}

/// Every output file of one run.
#[derive(Default)]
pub struct Exports {
    /// --output: the rendered table or JSON instead of stdout.
    pub report: Option<Export>,
    /// --junit
    pub junit: Option<Export>,
    /// --report DIR: DIR/index.html
    pub html: Option<Export>,
}

impl Exports {
    /// The files' paths, to remove them after an error.
    pub fn paths(&self) -> Vec<PathBuf> {
        [&self.report, &self.junit, &self.html].into_iter().flatten().map(|e| e.path.clone()).collect()
    }

    /// Removes files that an error left empty or partial.
    pub fn discard(paths: &[PathBuf]) {
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
}
