//! Hot reload of the rule set (DESIGN.md §3.4: reload never half-applies).
//!
//! A reload builds a complete new [`RuleSet`] from the directory with the next generation
//! number, runs its self-tests, and only if both are clean swaps it into the
//! `Arc<ArcSwap<RuleSet>>` every transaction reads once. Anything else leaves the serving
//! set alone, logs every diagnostic (file:line:col, with the caret display) and counts
//! the failure; the next trigger simply tries again, so a good save after a bad one is
//! picked up.
//!
//! Triggers: a change to a rule file (`*.yaml`/`*.yml`, hidden files ignored) anywhere
//! under the rules directory, seen by a debounced watcher on the *directory* (editors
//! save by writing a temporary file and renaming it over the old one), and SIGHUP.
//! Triggers that arrive while a reload runs are folded into one follow-up reload.
//!
//! # Debounce
//! The default is [`DEFAULT_DEBOUNCE`] (150 ms): a save is one burst of events a few
//! milliseconds long (`sed -i`: create, write, rename; an editor: write temp, rename;
//! `cp`/`rsync`/`git checkout` of several files: tens of ms), and the debouncer emits an
//! event once its path has been quiet for that long (checked every quarter of it), so a
//! multi-file update is normally loaded once and whole. 150 ms keeps the save-to-serving
//! time well under half a second (see `bench/reload_latency.sh`) while leaving headroom
//! over a slow multi-file copy. A set built from a half-copied directory is still safe:
//! it either fails to load (the old one keeps serving) or the copy's last event triggers
//! another reload.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, new_debouncer};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::ops::shutdown::Shutdown;
use crate::ruleset::selftest;
use crate::ruleset::{self, Diagnostic, RuleSet};

/// The default quiet time before a change is loaded.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// How reloads are triggered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the rules directory (SIGHUP works either way). Default true.
    pub watch: bool,
    /// Quiet time after the last change before reloading. Default [`DEFAULT_DEBOUNCE`].
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// Why a candidate rule set was not put into service.
#[derive(Debug, Clone)]
pub enum ReloadError {
    /// It does not load: every diagnostic, with file:line:col.
    Load(Vec<Diagnostic>),
    /// It loads, but its own self-tests fail.
    SelfTests(Vec<selftest::Failure>),
}

impl ReloadError {
    /// How many problems (diagnostics or failed self-tests).
    pub fn problems(&self) -> usize {
        match self {
            ReloadError::Load(d) => d.len(),
            ReloadError::SelfTests(f) => f.len(),
        }
    }
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Load(d) => write!(f, "{}", ruleset::diag::render_all(d)),
            ReloadError::SelfTests(fs) => {
                for x in fs {
                    writeln!(f, "error: {x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ReloadError {}

/// Loads `dir` as generation `generation` and runs its self-tests: the whole check a rule
/// set passes before it may serve. Rule-hit counters are attached to the result.
pub fn build(dir: &Path, generation: u64) -> Result<RuleSet, ReloadError> {
    let mut rules = ruleset::load(dir, generation).map_err(ReloadError::Load)?;
    let failures = selftest::run_all(&rules);
    if !failures.is_empty() {
        return Err(ReloadError::SelfTests(failures));
    }
    crate::ops::metrics::count_rule_hits(&mut rules);
    Ok(rules)
}

/// Owns the serving rule set of one directory and replaces it, whole, on demand.
pub struct Reloader {
    dir: PathBuf,
    rules: Arc<ArcSwap<RuleSet>>,
    /// Serializes reloads: generation numbers are taken and published in order.
    busy: Mutex<()>,
    /// Reload timestamps and durations.
    clock: Arc<dyn Clock>,
}

impl Reloader {
    /// Builds generation 1 from `dir`; fails if it does not load or its self-tests fail.
    pub fn start(dir: &Path, clock: Arc<dyn Clock>) -> Result<Reloader, ReloadError> {
        let rules = build(dir, 1)?;
        tracing::info!(
            generation = 1,
            rules = rules.rule_count(),
            dir = %dir.display(),
            "rule set generation 1 serving"
        );
        crate::ops::metrics::reload_succeeded(1, true, clock.now());
        Ok(Reloader {
            dir: dir.to_path_buf(),
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            busy: Mutex::new(()),
            clock,
        })
    }

    /// The handle transactions read the serving set from.
    pub fn rules(&self) -> Arc<ArcSwap<RuleSet>> {
        self.rules.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generation serving now.
    pub fn generation(&self) -> u64 {
        self.rules.load().generation
    }

    /// Builds the next generation and swaps it in if it passes; logs and counts either
    /// way. `cause` says what triggered it, for the log. Blocking (loads files).
    pub fn reload(&self, cause: &str) -> Result<u64, ReloadError> {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let serving = self.generation();
        let start = self.clock.instant();
        match build(&self.dir, serving + 1) {
            Ok(rules) => {
                let generation = rules.generation;
                let count = rules.rule_count();
                self.rules.store(Arc::new(rules));
                crate::ops::metrics::reload_succeeded(generation, false, self.clock.now());
                tracing::info!(
                    generation,
                    rules = count,
                    cause,
                    took_ms = start.elapsed().as_millis() as u64,
                    "rule set generation {generation} serving"
                );
                Ok(generation)
            }
            Err(e) => {
                crate::ops::metrics::reload_failed(e.problems());
                tracing::error!(
                    generation = serving,
                    cause,
                    problems = e.problems(),
                    "rule reload failed, generation {serving} keeps serving:\n{e}"
                );
                if let ReloadError::Load(diags) = &e {
                    for d in diags {
                        tracing::error!(
                            at = %format_args!("{}:{}:{}", d.file.display(), d.line, d.col),
                            rule = d.rule.as_deref().unwrap_or("-"),
                            "{}",
                            d.message
                        );
                    }
                }
                Err(e)
            }
        }
    }
}

/// Why the reload triggers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {dir}: {source}")]
    Watch {
        dir: PathBuf,
        source: notify_debouncer_full::notify::Error,
    },
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// Sets up the triggers now (SIGHUP handler, directory watcher when `config.watch`), so a
/// change from here on is seen, and spawns the task that reloads on them until
/// `shutdown`. Must be called inside the tokio runtime.
pub fn spawn(
    reloader: Arc<Reloader>,
    config: &ReloadConfig,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, WatchError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let debouncer = if config.watch {
        let dir = reloader.dir().to_path_buf();
        let mut d = new_debouncer(
            config.debounce,
            None,
            move |r: DebounceEventResult| match r {
                Ok(events) => {
                    if let Some(cause) = describe_change(&events) {
                        let _ = tx.send(cause);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "rule directory watcher");
                    }
                }
            },
        )
        .map_err(|source| WatchError::Watch {
            dir: dir.clone(),
            source,
        })?;
        d.watch(&dir, RecursiveMode::Recursive)
            .map_err(|source| WatchError::Watch {
                dir: dir.clone(),
                source,
            })?;
        tracing::info!(dir = %dir.display(), debounce_ms = config.debounce.as_millis() as u64, "watching the rule directory");
        Some(d)
    } else {
        drop(tx);
        None
    };
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _debouncer = debouncer;
        let stop = shutdown.wait();
        tokio::pin!(stop);
        let mut watching = true;
        loop {
            let mut cause = tokio::select! {
                _ = &mut stop => break,
                _ = hup.recv() => "SIGHUP".to_string(),
                c = rx.recv(), if watching => match c {
                    Some(c) => c,
                    None => { watching = false; continue; }
                },
            };
            // Fold what queued up meanwhile into this reload.
            while let Ok(more) = rx.try_recv() {
                cause = more;
            }
            let r = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || r.reload(&cause)).await;
        }
    }))
}

/// Whether a batch of debounced events touches the rule set, and how to name it in logs.
fn describe_change(events: &[DebouncedEvent]) -> Option<String> {
    let mut changed: Vec<String> = Vec::new();
    for e in events {
        if e.need_rescan() {
            return Some("change: rescan of the rule directory".into());
        }
        if matches!(e.kind, EventKind::Access(_)) {
            continue;
        }
        for p in &e.paths {
            if is_rule_file(p)
                && let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned())
                && !changed.contains(&name)
            {
                changed.push(name);
            }
        }
    }
    (!changed.is_empty()).then(|| format!("change: {}", changed.join(", ")))
}

/// A file the loader reads: `*.yaml` / `*.yml`, not hidden (editor swap and lock files).
fn is_rule_file(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden && p.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }

    #[test]
    fn rule_files() {
        for (p, want) in [
            ("rules/40-message-headers.yaml", true),
            ("rules/tables/x.yml", true),
            ("rules/.40-message-headers.yaml.swp", false),
            ("rules/.#40-message-headers.yaml", false),
            ("rules/sedAb12Cd", false),
            ("rules/40-message-headers.yaml~", false),
        ] {
            assert_eq!(is_rule_file(Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn a_bad_set_never_replaces_the_good_one() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(Path::new("rules"), dir.path());
        let r = Reloader::start(dir.path(), crate::clock::system()).unwrap();
        let serving = r.rules();
        let file = dir.path().join("40-message-headers.yaml");
        let good = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            good.replace("${config.max_forwards}", "${config.nope + }"),
        )
        .unwrap();
        let err = r.reload("test").unwrap_err();
        assert!(matches!(err, ReloadError::Load(_)), "{err}");
        assert!(
            err.to_string().contains("40-message-headers.yaml:"),
            "{err}"
        );
        assert_eq!(serving.load().generation, 1);
        std::fs::write(&file, &good).unwrap();
        assert_eq!(r.reload("test").unwrap(), 2);
        assert_eq!(serving.load().generation, 2);
        assert!(
            serving
                .load()
                .phases
                .iter()
                .flatten()
                .all(|r| r.hits.is_some())
        );
    }

    #[test]
    fn failing_self_tests_keep_the_old_set() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(Path::new("rules"), dir.path());
        let r = Reloader::start(dir.path(), crate::clock::system()).unwrap();
        let file = dir.path().join("settings.yaml");
        let s = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, s.replace("max_forwards: 70", "max_forwards: 69")).unwrap();
        let err = r.reload("test").unwrap_err();
        assert!(matches!(err, ReloadError::SelfTests(_)), "{err}");
        assert_eq!(r.generation(), 1);
    }
}
