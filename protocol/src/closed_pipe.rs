//! Every MPS binary exits quietly when its output goes to a pipe that was closed, as in
//! `authz check-config | head`: the Rust runtime ignores SIGPIPE, so a write to the closed
//! pipe fails with EPIPE and `println!` panics with a backtrace. [`exit_quietly`] turns exactly
//! that panic into the exit a shell expects (status 141, 128 + SIGPIPE) without a message, and
//! leaves every other panic to the default hook.

/// The exit status of a process ended by SIGPIPE, as shells report it.
pub const STATUS: i32 = 128 + 13;

/// Installs the panic hook; call it first thing in `main`.
pub fn exit_quietly() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_pipe(message) {
            std::process::exit(STATUS);
        }
        default(info);
    }));
}

/// The standard library's panic message for a print to a closed pipe.
fn is_closed_pipe(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_print_to_a_closed_pipe_is_recognised() {
        assert!(is_closed_pipe("failed printing to stdout: Broken pipe (os error 32)"));
        assert!(is_closed_pipe("failed printing to stderr: Broken pipe (os error 32)"));
        assert!(!is_closed_pipe("failed printing to stdout: No space left on device (os error 28)"));
        assert!(!is_closed_pipe("index out of bounds: Broken pipe"));
    }
}
