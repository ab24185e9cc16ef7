//! The Ctrl-C flag the training loop polls between steps, and its progress bars.

use std::sync::atomic::{AtomicBool, Ordering};

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
pub fn bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    data::progress::bar(len, prefix, true)
}
