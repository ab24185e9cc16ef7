//! Progress bars on a terminal (hidden otherwise, so logs and CI output stay clean) and the Ctrl-C flag
//! the training loop polls between steps.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C (SIGINT) set a flag that training checks after each step; a second one
/// ends the process at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step (Ctrl-C again to quit at once)");
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A bar of `len` steps drawn on stderr when it is a terminal.
pub fn bar(len: u64, prefix: &str) -> ProgressBar {
    let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}").expect("valid template").progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
