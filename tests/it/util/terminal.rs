//! A pseudo-terminal for the shell's tests: the program runs with it as its
//! controlling terminal, keys are typed into it, and everything it prints is kept,
//! so a test can wait for what a user would see.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{TIMEOUT, strip_ansi};

/// A program running in a pseudo-terminal, and everything it printed.
pub struct Terminal {
    master: File,
    /// The program, for its exit status.
    pub child: Child,
    screen: Arc<Mutex<String>>,
}

impl Terminal {
    /// Starts `program args` with the terminal as its controlling terminal
    /// (`setsid --ctty`), so that Ctrl-C typed there is SIGINT, as at a real one.
    pub fn spawn(program: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Terminal {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let size = rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, size).unwrap();
        let mut command = Command::new("setsid");
        command
            .arg("--ctty")
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .env_remove("XFER_KEY")
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(String::new()));
        let (mut reader, seen) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Terminal {
            master,
            child,
            screen,
        }
    }

    pub fn type_in(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// Waits until the screen shows `needle` `times` times; returns the screen.
    pub fn wait_for_count(&self, needle: &str, times: usize) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen.lock().unwrap().clone();
            if screen.matches(needle).count() >= times {
                return screen;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "never saw {needle:?} {times} times; the screen: {screen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_count(needle, 1)
    }

    /// Waits until the cursor sits at an empty `prompt` (the line editor redraws
    /// the prompt with every key, so counting prompts is not enough).
    pub fn wait_for_empty_prompt(&self, prompt: &str) {
        let start = Instant::now();
        loop {
            let screen = self.screen.lock().unwrap().clone();
            let last_line = screen.rsplit('\n').next().unwrap_or("");
            let shown = strip_ansi(last_line);
            let current = shown
                .rsplit('\r')
                .find(|part| !part.is_empty())
                .unwrap_or("");
            if current == prompt {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "never at an empty prompt; the screen: {screen:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
