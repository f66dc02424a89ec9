//! Renders whose memory cannot be bounded in-process run in a forked child under an
//! address-space limit. minijinja's fuel bounds instructions and most of the data a render
//! builds, but a sequence repeated with `*` is lazy and uncounted: `[a] * 100000` of a 100 KB
//! string is 10 GB once joined or printed, allocated before any check runs, and an allocation
//! failure aborts the process. The `*` operator is the only such amplifier, so a template set
//! without it renders in-process at full speed; one with it renders each memo miss in a child
//! process that dies alone when it runs out of room.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Memory a sandboxed render may take beyond what the process already maps.
pub const MAX_RENDER_MEMORY: usize = 256 << 20;

/// A sandboxed render that runs longer than this (a child stuck on a lock another thread held
/// when it was forked, say) is killed.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(10);

/// The first `*` inside a `{{ … }}` or `{% … %}` tag, outside string literals, as
/// `(line, column)`, both 1-based.
pub fn first_repetition(source: &str) -> Option<(usize, usize)> {
    let bytes = source.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let opens_tag = bytes[i] == b'{' && matches!(bytes[i + 1], b'{' | b'%');
        if !opens_tag {
            i += 1;
            continue;
        }
        let close = if bytes[i + 1] == b'{' { b'}' } else { b'%' };
        i += 2;
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(_) if b == b'\\' => i += 1,
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'"' || b == b'\'' => quote = Some(b),
                None if b == b'*' => return Some(position(source, i)),
                None if b == close && bytes.get(i + 1) == Some(&b'}') => break,
                None => {}
            }
            i += 1;
        }
        i += 2;
    }
    None
}

fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

/// How a sandboxed render ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxFailure {
    /// The child ran out of its address space.
    OutOfMemory,
    /// The child ran past [`CHILD_DEADLINE`] and was killed.
    TimedOut,
    /// The child could not be started, or died for another reason.
    Failed(String),
}

/// Runs `work` in a forked child whose address space may grow by at most `limit` bytes, and
/// returns what it returned (as JSON through a pipe).
pub fn run<T, F>(limit: usize, work: F) -> Result<T, SandboxFailure>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> T,
{
    // Everything the child needs is computed before the fork: after it, the child only
    // renders, writes and exits.
    let mapped = mapped_bytes().map_err(SandboxFailure::Failed)?;
    let ceiling = mapped.saturating_add(limit) as libc::rlim_t;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe(2) to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SandboxFailure::Failed(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: the child only runs `work`, writes to its pipe and leaves with `_exit`, never
    // returning into the caller's stack frames or running destructors of shared state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: both fds were just created by pipe2 and are owned here.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(SandboxFailure::Failed(format!("cannot fork: {e}")));
    }
    if pid == 0 {
        // SAFETY: in the child; `write_fd` is the pipe's write end.
        unsafe {
            libc::close(read_fd);
            // Running out of room is an expected end here: the allocator's own message on
            // stderr would read like the server's failure. The parent reports it instead.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 {
                libc::dup2(null, 2);
            }
            let rlimit = libc::rlimit {
                rlim_cur: ceiling,
                rlim_max: ceiling,
            };
            libc::setrlimit(libc::RLIMIT_AS, &rlimit);
            // A panic must never unwind out of here: above this frame is a copy of the server,
            // whose sockets the child shares.
            let Ok(answer) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                serde_json::to_vec(&work()).unwrap_or_default()
            })) else {
                libc::_exit(3);
            };
            let mut pipe = <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(write_fd);
            let code = if pipe.write_all(&answer).is_ok() {
                0
            } else {
                1
            };
            libc::_exit(code);
        }
    }
    // SAFETY: the parent keeps only the read end.
    unsafe { libc::close(write_fd) };
    let answer = read_answer(read_fd, pid);
    let status = reap(pid);
    match (answer, status) {
        (Ok(bytes), Ok(0)) if !bytes.is_empty() => serde_json::from_slice(&bytes)
            .map_err(|e| SandboxFailure::Failed(format!("unreadable answer from the render: {e}"))),
        (Err(ReadFailure::TimedOut), _) => Err(SandboxFailure::TimedOut),
        (Err(ReadFailure::Io(e)), _) => Err(SandboxFailure::Failed(e)),
        (_, Ok(code)) if code == libc::SIGABRT + 128 || code == libc::SIGSEGV + 128 => {
            Err(SandboxFailure::OutOfMemory)
        }
        (_, Ok(code)) => Err(SandboxFailure::Failed(format!(
            "the render process ended with status {code}"
        ))),
        (_, Err(e)) => Err(SandboxFailure::Failed(e)),
    }
}

/// Bytes of address space the process maps now (the first field of /proc/self/statm).
fn mapped_bytes() -> Result<usize, String> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| format!("cannot read /proc/self/statm: {e}"))?;
    let pages: usize = statm
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("/proc/self/statm has no size")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    Ok(pages * page)
}

enum ReadFailure {
    TimedOut,
    Io(String),
}

/// Reads the child's answer until it closes the pipe, killing it past the deadline.
fn read_answer(fd: libc::c_int, pid: libc::pid_t) -> Result<Vec<u8>, ReadFailure> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is the pipe's read end, owned from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready =
            unsafe { libc::poll(&mut poll, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready == 0 {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(ReadFailure::TimedOut);
        }
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadFailure::Io(format!("reading the render's answer: {e}"))),
        }
    }
}

/// Waits for the child: its exit code, or 128 + the signal that ended it.
fn reap(pid: libc::pid_t) -> Result<i32, String> {
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waiting for the render process: {e}"));
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_is_found_in_tags_only_and_outside_strings() {
        assert_eq!(first_repetition("a: \"*.log\"\n"), None);
        assert_eq!(first_repetition("{{ \"*\" ~ x }}{# * #}"), None);
        assert_eq!(first_repetition("x\n  {{ vars.n * 2 }}"), Some((2, 13)));
        assert_eq!(first_repetition("{% set a = [b] * 9 %}"), Some((1, 16)));
        assert_eq!(first_repetition("{{ 'it\\'s' }}{{ a*b }}"), Some((1, 18)));
    }

    #[test]
    fn a_child_returns_its_answer() {
        let answer: Vec<String> = run(MAX_RENDER_MEMORY, || vec!["rendered".to_owned()]).unwrap();
        assert_eq!(answer, vec!["rendered".to_owned()]);
    }

    #[test]
    fn a_child_that_panics_ends_there() {
        let outcome: Result<u8, _> = run(MAX_RENDER_MEMORY, || panic!("in the child"));
        assert_eq!(
            outcome,
            Err(SandboxFailure::Failed(
                "the render process ended with status 3".into()
            ))
        );
    }

    #[test]
    fn a_child_that_allocates_past_its_limit_dies_alone() {
        let outcome: Result<usize, _> = run(64 << 20, || {
            let big = vec![1u8; 512 << 20];
            big.iter().map(|b| *b as usize).sum()
        });
        assert_eq!(outcome, Err(SandboxFailure::OutOfMemory));
    }
}
