//! Console logging, and a training run's `train.log`.

use std::path::PathBuf;

/// A log file opened (with its directory) at the first line written, so a run that fails
/// before it starts leaves no run directory behind.
struct LazyLogFile {
    path: PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl std::io::Write for &LazyLogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.file.lock().unwrap();
        if file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *file = Some(std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        file.as_mut().unwrap().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap().as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// Console logging, plus `<run>/train.log` for training runs.
pub fn init_logging(log_file: Option<PathBuf>) {
    use tracing_subscriber::prelude::*;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter());
    let file = log_file.map(|path| {
        let sink: &'static LazyLogFile = Box::leak(Box::new(LazyLogFile { path, file: std::sync::Mutex::new(None) }));
        tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || sink).with_filter(filter())
    });
    tracing_subscriber::registry().with(console).with(file).init();
}
