//! Asking the payer for what the command line left out. A bad answer gets a clear message and
//! the question again, up to [`ATTEMPTS_MAX`] times; nothing is stored until every answer is in.
//! Questions go to stderr so stdout carries only the command's result.

use std::io::{BufRead, IsTerminal, Write};

use clap::ValueEnum;
use mps_protocol::Password;
use zeroize::Zeroizing;

use crate::error::CliError;

/// Tries per question before giving up.
pub const ATTEMPTS_MAX: usize = 5;
/// Longest line read at a prompt.
const LINE_BYTES_MAX: usize = 1024;

/// When to ask for missing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interactive {
    /// Ask when stdin is a terminal.
    Auto,
    /// Always ask, reading answers line by line from stdin (for scripts that drive the prompts).
    Always,
    /// Never ask: a missing value is an error.
    Never,
}

/// Asks questions on stderr and reads answers from stdin (or, for a password on a terminal,
/// from the terminal without echo).
pub struct Prompter<R: BufRead, W: Write> {
    enabled: bool,
    terminal: bool,
    input: R,
    output: W,
}

impl Prompter<std::io::StdinLock<'static>, std::io::Stderr> {
    /// The real prompter on stdin and stderr.
    pub fn stdio(mode: Interactive) -> Self {
        let terminal = std::io::stdin().is_terminal();
        let enabled = match mode {
            Interactive::Auto => terminal,
            Interactive::Always => true,
            Interactive::Never => false,
        };
        Self { enabled, terminal, input: std::io::stdin().lock(), output: std::io::stderr() }
    }
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    /// A prompter over any reader and writer (tests).
    #[cfg(test)]
    pub fn new(enabled: bool, input: R, output: W) -> Self {
        Self { enabled, terminal: false, input, output }
    }

    /// Writes a line to the payer.
    pub fn say(&mut self, line: &str) {
        // The payer's screen is gone if stderr fails; nothing useful to do about it.
        let _ = writeln!(self.output, "{line}");
    }

    /// Reads one line (without its line end); end of input is an error.
    pub fn read_line(&mut self) -> Result<Zeroizing<String>, CliError> {
        let mut line = Zeroizing::new(String::new());
        let read = std::io::Read::take(self.input.by_ref(), LINE_BYTES_MAX as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| CliError::Prompt(format!("cannot read the answer: {e}")))?;
        if read == 0 {
            return Err(CliError::Prompt("end of input before an answer was given".into()));
        }
        if line.len() > LINE_BYTES_MAX {
            return Err(CliError::Prompt(format!("answer longer than {LINE_BYTES_MAX} bytes")));
        }
        let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        Ok(trimmed)
    }

    /// Asks `question` until `parse` accepts the answer (surrounding spaces removed). `flag` names
    /// the command-line flag that supplies the value, for the error when prompting is off.
    pub fn ask<T>(
        &mut self,
        flag: &'static str,
        question: &str,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> Result<T, CliError> {
        if !self.enabled {
            return Err(CliError::Missing { flag });
        }
        for attempt in 1..=ATTEMPTS_MAX {
            let _ = write!(self.output, "{question}: ");
            let _ = self.output.flush();
            let line = self.read_line()?;
            match parse(line.trim()) {
                Ok(value) => return Ok(value),
                Err(message) if attempt < ATTEMPTS_MAX => self.say(&format!("  {message}. Please try again.")),
                Err(message) => {
                    return Err(CliError::Prompt(format!("{message}; giving up after {ATTEMPTS_MAX} tries")));
                }
            }
        }
        Err(CliError::Prompt(format!("giving up after {ATTEMPTS_MAX} tries")))
    }

    /// Lists `labels` numbered from 1 and asks for a number or a name that `find` resolves.
    pub fn choose(
        &mut self,
        flag: &'static str,
        what: &str,
        labels: &[String],
        mut find: impl FnMut(&str) -> Result<usize, String>,
    ) -> Result<usize, CliError> {
        if !self.enabled {
            return Err(CliError::Missing { flag });
        }
        self.say(&format!("{what}:"));
        for (index, label) in labels.iter().enumerate() {
            self.say(&format!("  {}) {label}", index + 1));
        }
        let count = labels.len();
        self.ask(flag, &format!("Choose the {} [1-{count}]", what.trim_end_matches('s').to_lowercase()), |answer| {
            match answer.parse::<usize>() {
                Ok(number) if (1..=count).contains(&number) => Ok(number - 1),
                Ok(_) if answer.len() < 4 => Err(format!("choose a number from 1 to {count}")),
                _ => find(answer),
            }
        })
    }

    /// Asks for the payment password: without echo on a terminal, else as a line of stdin.
    pub fn password(&mut self) -> Result<Password, CliError> {
        if !self.enabled {
            return Err(CliError::Missing { flag: "--password-stdin (or MPS_SIM_PASSWORD)" });
        }
        for attempt in 1..=ATTEMPTS_MAX {
            let text = if self.terminal {
                Zeroizing::new(
                    rpassword::prompt_password("Payment password: ")
                        .map_err(|e| CliError::Prompt(format!("cannot read the password: {e}")))?,
                )
            } else {
                let _ = write!(self.output, "Payment password: ");
                let _ = self.output.flush();
                self.read_line()?
            };
            match Password::new(&text) {
                Ok(password) => return Ok(password),
                Err(error) if attempt < ATTEMPTS_MAX => self.say(&format!("  {error}. Please try again.")),
                Err(error) => return Err(CliError::Prompt(format!("{error}; giving up after {ATTEMPTS_MAX} tries"))),
            }
        }
        Err(CliError::Prompt(format!("giving up after {ATTEMPTS_MAX} tries")))
    }

    /// Asks a yes/no question; no is the default. Off: an error asking for `--yes`.
    pub fn confirm(&mut self, question: &str) -> Result<bool, CliError> {
        self.ask("--yes", &format!("{question} [y/N]"), |answer| match answer.to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(true),
            "" | "n" | "no" => Ok(false),
            _ => Err("answer y or n".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompter(input: &str) -> Prompter<&[u8], Vec<u8>> {
        Prompter::new(true, input.as_bytes(), Vec::new())
    }

    #[test]
    fn reasks_until_the_answer_parses() {
        let mut p = prompter("abc\n\n42\n");
        let value = p.ask("--n", "Number", |s| s.parse::<u32>().map_err(|_| "not a number".to_string())).unwrap();
        assert_eq!(value, 42);
        let shown = String::from_utf8(p.output).unwrap();
        assert_eq!(shown.matches("not a number. Please try again.").count(), 2);
    }

    #[test]
    fn gives_up_after_the_limit_and_at_end_of_input() {
        let input = "x\n".repeat(ATTEMPTS_MAX);
        let mut p = prompter(&input);
        assert!(matches!(
            p.ask("--n", "Number", |s| s.parse::<u32>().map_err(|e| e.to_string())),
            Err(CliError::Prompt(_))
        ));
        let mut p = prompter("x\n");
        assert!(matches!(
            p.ask("--n", "Number", |s| s.parse::<u32>().map_err(|e| e.to_string())),
            Err(CliError::Prompt(_))
        ));
    }

    #[test]
    fn disabled_prompts_name_the_flag() {
        let mut p = Prompter::new(false, "1\n".as_bytes(), Vec::new());
        assert!(matches!(
            p.ask("--order", "Order", |s| Ok::<_, String>(s.to_owned())),
            Err(CliError::Missing { flag: "--order" })
        ));
    }

    #[test]
    fn choose_takes_numbers_and_names() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let mut p = prompter("3\n2\n");
        assert_eq!(p.choose("--x", "Things", &labels, |_| Err("no such thing".into())).unwrap(), 1);
        let mut p = prompter("bee\n");
        assert_eq!(
            p.choose("--x", "Things", &labels, |s| if s == "bee" { Ok(1) } else { Err("no".into()) }).unwrap(),
            1
        );
    }

    #[test]
    fn password_is_checked_and_confirm_defaults_to_no() {
        let mut p = prompter("abc\nlong enough\n");
        assert_eq!(p.password().unwrap().expose(), b"long enough");
        assert!(!prompter("\n").confirm("Pay?").unwrap());
        assert!(prompter("maybe\nYES\n").confirm("Pay?").unwrap());
    }
}
