//! The tools a Docker healthcheck calls in the couchdb:3.4.2 image, for the `FROM scratch`
//! couchsim image, which has no shell: the same binary answers as `curl`, `grep` and `sh`.
//!
//! Only what the bundle's healthchecks use, each refusing (exit 2 or 127, with a message)
//! what it does not support rather than doing something else:
//! - `sh -c SCRIPT`: pipelines (`|`), `&&`, `||`, `;`, single and double quotes, backslash,
//!   `$NAME`/`${NAME}` from the environment, and the builtins `printf` (`%s`, `%%`, `\n`, `\t`,
//!   `\\`, `\"`), `exit`, `true`, `false`, `:`;
//! - `curl`: `-f -s -S -X -H -d -u -o -m --url`, and `-K FILE` / `-K -` (a curl config file, as
//!   the healthcheck feeds the credentials on stdin instead of on a command line);
//! - `grep [-q] [-s] -F PATTERN` on stdin (fixed strings only).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::net::client::{self, ClientRequest};

/// Splits a shell word list (single and double quotes, backslash escapes). No expansion.
pub fn shell_words(s: &str) -> Vec<String> {
    match tokenize(s, &HashMap::new()) {
        Ok(tokens) => tokens
            .into_iter()
            .map(|t| match t {
                Token::Word(w) => w,
                Token::Op(op) => op.to_string(),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// sh
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Op(&'static str),
}

/// Splits a script into words and the operators `|`, `||`, `&&`, `;`, expanding `$NAME` and
/// `${NAME}` outside single quotes. Anything else a shell would treat specially is refused.
fn tokenize(script: &str, env: &HashMap<String, String>) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false; // a word is open (it may be empty: '')
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    let finish = |out: &mut Vec<Token>, cur: &mut String, have: &mut bool| {
        if *have {
            out.push(Token::Word(std::mem::take(cur)));
            *have = false;
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), c) => cur.push(c),
            (Some(_), '"') => quote = None,
            (Some(_), '\\') => match chars.peek() {
                Some(&n) if matches!(n, '"' | '\\' | '$' | '`') => {
                    cur.push(n);
                    chars.next();
                }
                _ => cur.push('\\'),
            },
            (q, '$') => {
                let value = match variable_name(&mut chars)? {
                    Some(n) => env.get(&n).cloned().unwrap_or_default(),
                    None => "$".to_string(),
                };
                // Unquoted, an empty expansion makes no word (as in sh).
                have |= q.is_some() || !value.is_empty();
                cur.push_str(&value);
            }
            (Some(_), '`') => return Err("command substitution is not supported".into()),
            (Some(_), c) => cur.push(c),
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                have = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    have = true;
                }
            }
            (None, c) if c.is_whitespace() => finish(&mut out, &mut cur, &mut have),
            (None, '|') | (None, '&') | (None, ';') => {
                finish(&mut out, &mut cur, &mut have);
                let op = match (c, chars.peek()) {
                    ('|', Some('|')) => "||",
                    ('&', Some('&')) => "&&",
                    ('|', _) => "|",
                    (';', _) => ";",
                    _ => return Err("background jobs (&) are not supported".into()),
                };
                if op.len() == 2 {
                    chars.next();
                }
                out.push(Token::Op(op));
            }
            (None, c) if "<>()`#".contains(c) => {
                return Err(format!("{c:?} is not supported"));
            }
            (None, c) => {
                cur.push(c);
                have = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    finish(&mut out, &mut cur, &mut have);
    Ok(out)
}

/// After a `$`: the variable's name (`NAME` or `{NAME}`), or None for a lone `$`.
fn variable_name(
    chars: &mut std::iter::Peekable<std::str::Chars>,
) -> Result<Option<String>, String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.peek() {
        Some('{') => {
            chars.next();
            let mut name = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    return if !name.is_empty() && name.chars().all(word) {
                        Ok(Some(name))
                    } else {
                        Err(format!("${{{name}}} is not supported"))
                    };
                }
                name.push(c);
            }
            Err("unterminated ${".into())
        }
        Some('(') => Err("command substitution is not supported".into()),
        Some(&c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if !word(c) {
                    break;
                }
                name.push(c);
                chars.next();
            }
            Ok(Some(name))
        }
        Some(&c) if c.is_ascii_digit() || "?#@*!-$".contains(c) => {
            Err(format!("${c} is not supported"))
        }
        _ => Ok(None),
    }
}

/// What one command asks of the script: go on with a status, or `exit`.
enum Flow {
    Status(i32),
    Exit(i32),
}

/// `sh -c SCRIPT` with the process environment.
pub fn sh(args: &[String]) -> i32 {
    let env: HashMap<String, String> = std::env::vars().collect();
    sh_with(args, &env, &mut io::stdout())
}

/// `sh -c SCRIPT [NAME ARGS…]` (NAME and ARGS are ignored) with `env`; stdout goes to `out`.
pub fn sh_with(args: &[String], env: &HashMap<String, String>, out: &mut dyn Write) -> i32 {
    let script = match args {
        [flag, script, ..] if flag == "-c" => script,
        _ => {
            eprintln!("sh: only `sh -c '<command>'` is supported by couchsim");
            return 2;
        }
    };
    let tokens = match tokenize(script, env) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sh: {e} (couchsim's sh)");
            return 2;
        }
    };
    // An and-or list: pipelines joined by `&&`, `||` and `;`, left to right.
    let mut status = 0;
    let mut pipeline: Vec<Vec<String>> = vec![Vec::new()];
    let mut run_next = true;
    let mut tokens = tokens.into_iter().peekable();
    loop {
        let token = tokens.next();
        match &token {
            Some(Token::Word(w)) => {
                if let Some(cmd) = pipeline.last_mut() {
                    cmd.push(w.clone());
                }
                continue;
            }
            Some(Token::Op("|")) => {
                pipeline.push(Vec::new());
                continue;
            }
            _ => {}
        }
        // The end of a pipeline: run it unless the operator before it said to skip it.
        if pipeline.iter().any(Vec::is_empty) && pipeline.len() > 1
            || pipeline[0].is_empty() && token.is_some()
        {
            eprintln!("sh: syntax error: a command is missing (couchsim's sh)");
            return 2;
        }
        if run_next && !pipeline[0].is_empty() {
            match run_pipeline(&pipeline, out) {
                Flow::Status(s) => status = s,
                Flow::Exit(code) => return code,
            }
        }
        pipeline = vec![Vec::new()];
        run_next = match token {
            None => return status,
            Some(Token::Op("&&")) => status == 0,
            Some(Token::Op("||")) => status != 0,
            _ => true, // `;`
        };
    }
}

/// Runs `a | b | c`: each command reads what the one before it wrote; the last writes to `out`.
/// The status is the last command's (no pipefail, as in dash).
fn run_pipeline(cmds: &[Vec<String>], out: &mut dyn Write) -> Flow {
    let mut input: Vec<u8> = Vec::new();
    let mut flow = Flow::Status(0);
    for (i, words) in cmds.iter().enumerate() {
        let mut piped = Vec::new();
        let sink: &mut dyn Write = if i + 1 == cmds.len() {
            &mut *out
        } else {
            &mut piped
        };
        flow = run_command(words, &mut input.as_slice(), sink);
        input = piped;
    }
    flow
}

fn run_command(words: &[String], input: &mut dyn Read, out: &mut dyn Write) -> Flow {
    let name = words[0].rsplit('/').next().unwrap_or(&words[0]);
    let args = &words[1..];
    Flow::Status(match name {
        "exit" => return Flow::Exit(args.first().and_then(|c| c.parse().ok()).unwrap_or(0)),
        "true" | ":" => 0,
        "false" => 1,
        "printf" => printf(args, out),
        "curl" => curl_with(args, input, out),
        "grep" => grep_with(args, input, out),
        other => {
            eprintln!("sh: {other}: not found (couchsim's sh runs curl, grep and printf)");
            127
        }
    })
}

/// The `printf` builtin: `%s` and `%%` conversions, backslash escapes in the format, and the
/// format reused while arguments are left (POSIX).
pub fn printf(args: &[String], out: &mut dyn Write) -> i32 {
    let Some(format) = args.first() else {
        eprintln!("printf: usage: printf format [arguments]");
        return 2;
    };
    let mut rest = args[1..].iter();
    let mut text = String::new();
    loop {
        let mut used = false;
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some(c @ ('\\' | '"' | '\'')) => text.push(c),
                    Some(c) => {
                        text.push('\\');
                        text.push(c);
                    }
                    None => text.push('\\'),
                },
                '%' => match chars.next() {
                    Some('%') => text.push('%'),
                    Some('s') => {
                        used = true;
                        text.push_str(rest.next().map(String::as_str).unwrap_or(""));
                    }
                    Some(c) => {
                        eprintln!("printf: %{c}: only %s and %% are supported (couchsim)");
                        return 1;
                    }
                    None => text.push('%'),
                },
                c => text.push(c),
            }
        }
        if !used || rest.len() == 0 {
            break;
        }
    }
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

// ---------------------------------------------------------------------------------------------
// grep
// ---------------------------------------------------------------------------------------------

/// `grep [-q] [-s] -F PATTERN` (or `-e PATTERN`) on stdin: 0 when a line contains PATTERN,
/// 1 when none does, 2 on bad usage.
pub fn grep(args: &[String]) -> i32 {
    grep_with(args, &mut io::stdin(), &mut io::stdout())
}

fn grep_with(args: &[String], input: &mut dyn Read, out: &mut dyn Write) -> i32 {
    let (mut quiet, mut fixed, mut pattern) = (false, false, None);
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "-e" || a == "--regexp" {
            i += 1;
            pattern = args.get(i).cloned();
        } else if a == "--" {
            pattern = args.get(i + 1).cloned();
            i += 1;
        } else if let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) {
            for f in flags.chars() {
                match f {
                    'q' => quiet = true,
                    'F' => fixed = true,
                    's' => {}
                    _ => {
                        eprintln!("grep: -{f}: not supported by couchsim's grep");
                        return 2;
                    }
                }
            }
        } else if pattern.is_none() {
            pattern = Some(a.clone());
        } else {
            eprintln!("grep: {a}: files are not supported by couchsim's grep (stdin only)");
            return 2;
        }
        i += 1;
    }
    let Some(pattern) = pattern else {
        eprintln!("grep: no pattern");
        return 2;
    };
    if !fixed && pattern.contains(['.', '[', ']', '*', '^', '$', '\\']) {
        eprintln!("grep: {pattern:?}: couchsim's grep matches fixed strings only (use -F)");
        return 2;
    }
    let mut text = Vec::new();
    if input.read_to_end(&mut text).is_err() {
        return 2;
    }
    let text = String::from_utf8_lossy(&text);
    let mut found = false;
    for line in text.lines().filter(|l| l.contains(pattern.as_str())) {
        found = true;
        if quiet {
            break;
        }
        let _ = writeln!(out, "{line}");
    }
    if found {
        0
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, PartialEq)]
pub struct CurlArgs {
    pub fail: bool,
    pub silent: bool,
    pub show_error: bool,
    pub method: Option<String>,
    pub headers: Vec<(String, String)>,
    pub data: Option<String>,
    pub user: Option<String>,
    pub output: Option<String>,
    pub max_time: Option<f64>,
    pub url: Option<String>,
    /// `--retry N`: attempts after the first, on a transient error (timeout, refused with
    /// `--retry-connrefused`, with `-f` HTTP 408/429/500/502/503/504) or any error
    /// (`--retry-all-errors`).
    pub retry: u32,
    pub retry_delay: Option<f64>,
    pub retry_all_errors: bool,
    pub retry_connrefused: bool,
}

/// curl's options that take no value (in a config file, a line with one of these has none).
const CURL_SWITCHES: &[&str] = &[
    "fail",
    "silent",
    "show-error",
    "verbose",
    "location",
    "insecure",
    "include",
];

/// The options of a curl config file (`-K`), as command-line words: `name = value`,
/// `name value`, `name: value` or `--name value`; a value in double quotes may hold spaces and
/// the escapes `\\ \" \t \n \r`; `#` starts a comment line.
pub fn curl_config_args(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line
            .find(|c: char| c.is_whitespace() || c == '=' || c == ':')
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        let name = if name.starts_with('-') {
            name.to_string()
        } else {
            format!("--{name}")
        };
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix(['=', ':'])
            .map(str::trim_start)
            .unwrap_or(rest);
        out.push(name.clone());
        if rest.is_empty() || CURL_SWITCHES.contains(&name.trim_start_matches('-')) {
            continue;
        }
        let value = match rest.strip_prefix('"') {
            Some(quoted) => {
                let mut v = String::new();
                let mut chars = quoted.chars();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated quote in config: {name}")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('t') => v.push('\t'),
                            Some('n') => v.push('\n'),
                            Some('r') => v.push('\r'),
                            Some('v') => v.push('\u{b}'),
                            Some(c) => v.push(c),
                            None => return Err(format!("unterminated quote in config: {name}")),
                        },
                        Some(c) => v.push(c),
                    }
                }
                v
            }
            None => rest.split_whitespace().next().unwrap_or("").to_string(),
        };
        out.push(value);
    }
    Ok(out)
}

/// Replaces every `-K FILE` / `--config FILE` with the options the file holds (`-` = stdin).
fn expand_config(args: &[String], input: &mut dyn Read) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "-K" || a == "--config" {
            i += 1;
            let file = args
                .get(i)
                .ok_or_else(|| format!("option {a}: requires parameter"))?;
            let mut text = String::new();
            let read = if file == "-" {
                input.read_to_string(&mut text).map(|_| ())
            } else {
                std::fs::read_to_string(file).map(|t| text = t)
            };
            read.map_err(|_| format!("cannot read config file {file}"))?;
            out.extend(curl_config_args(&text)?);
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    Ok(out)
}

pub fn parse_curl_args(args: &[String]) -> Result<CurlArgs, String> {
    let mut a = CurlArgs::default();
    let mut i = 0;
    let take = |i: &mut usize, flag: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option {flag}: requires parameter"))
    };
    while i < args.len() {
        let arg = &args[i];
        match arg.as_str() {
            "--fail" => a.fail = true,
            "--silent" => a.silent = true,
            "--show-error" => a.show_error = true,
            "-X" | "--request" => a.method = Some(take(&mut i, arg)?),
            "-H" | "--header" => {
                let h = take(&mut i, arg)?;
                if let Some((k, v)) = h.split_once(':') {
                    a.headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            "-d" | "--data" | "--data-raw" | "--data-binary" => a.data = Some(take(&mut i, arg)?),
            "-u" | "--user" => a.user = Some(take(&mut i, arg)?),
            "-o" | "--output" => a.output = Some(take(&mut i, arg)?),
            "--url" => a.url = Some(take(&mut i, arg)?),
            "-m" | "--max-time" => {
                let v = take(&mut i, arg)?;
                a.max_time = Some(v.parse().map_err(|_| format!("bad --max-time {v}"))?);
            }
            "--retry" => {
                let v = take(&mut i, arg)?;
                a.retry = v.parse().map_err(|_| format!("bad --retry {v}"))?;
            }
            "--retry-delay" => {
                let v = take(&mut i, arg)?;
                a.retry_delay = Some(v.parse().map_err(|_| format!("bad --retry-delay {v}"))?);
            }
            "--retry-all-errors" => a.retry_all_errors = true,
            "--retry-connrefused" => a.retry_connrefused = true,
            "-v" | "--verbose" | "-L" | "--location" | "-k" | "--insecure" | "-i" | "--include" => {
            }
            s if s.starts_with("--") => return Err(format!("option {s}: is unknown")),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'f' => a.fail = true,
                        's' => a.silent = true,
                        'S' => a.show_error = true,
                        'v' | 'L' | 'k' | 'i' => {}
                        _ => return Err(format!("option -{c}: is unknown")),
                    }
                }
            }
            url => a.url = Some(url.to_string()),
        }
        i += 1;
    }
    Ok(a)
}

/// A minimal curl on the process's stdin and stdout.
pub fn curl(args: &[String]) -> i32 {
    curl_with(args, &mut io::stdin(), &mut io::stdout())
}

/// A minimal curl: exit 0 on success, 22 on an HTTP error with `-f`, 7 when the connection
/// fails, 6 when the host does not resolve, 28 on timeout, 2/3 on bad usage/URL, 26 when a
/// config file cannot be read; `--retry` repeats failed attempts. `input` is read only for
/// `-K -`.
pub fn curl_with(args: &[String], input: &mut dyn Read, out: &mut dyn Write) -> i32 {
    let parsed = expand_config(args, input)
        .map_err(|e| (26, e))
        .and_then(|args| parse_curl_args(&args).map_err(|e| (2, e)));
    let a = match parsed {
        Ok(a) => a,
        Err((code, e)) => {
            eprintln!("curl: {e}");
            return code;
        }
    };
    // Like curl: wait --retry-delay (default 1 s, doubling) between attempts.
    let mut delay = a.retry_delay.unwrap_or(1.0).clamp(0.0, 600.0);
    let mut attempt = 0;
    loop {
        let (code, transient) = curl_once(&a, out);
        let retry = code != 0 && (transient || a.retry_all_errors) && attempt < a.retry;
        if !retry {
            return code;
        }
        attempt += 1;
        if !a.silent {
            eprintln!("Warning: Problem (curl exit {code}). Will retry in {delay} seconds.");
        }
        std::thread::sleep(Duration::from_secs_f64(delay));
        if a.retry_delay.is_none() {
            delay = (delay * 2.0).min(600.0);
        }
    }
}

/// One attempt: curl's exit code, and whether `--retry` counts the failure as transient.
fn curl_once(a: &CurlArgs, out: &mut dyn Write) -> (i32, bool) {
    let say = |code: i32, msg: &str| {
        if !a.silent || a.show_error {
            eprintln!("curl: ({code}) {msg}");
        }
        code
    };
    let url = match a.url.as_deref().and_then(client::parse_url) {
        Some(u) => u,
        None => return (say(3, "URL using bad/illegal format or missing URL"), false),
    };
    let addrs = match client::resolve_all(&url.host, url.port) {
        Ok(a) => a,
        Err(_) => {
            return (
                say(6, &format!("Could not resolve host: {}", url.host)),
                false,
            )
        }
    };
    let method = a
        .method
        .clone()
        .unwrap_or_else(|| if a.data.is_some() { "POST" } else { "GET" }.to_string());
    let mut req = ClientRequest::new(&method, &url.path);
    req.host = format!("{}:{}", url.host, url.port);
    req.headers = a.headers.clone();
    req.body = a.data.clone().map(String::into_bytes);
    req.basic_auth = a
        .user
        .as_deref()
        .map(|u| {
            let (n, p) = u.split_once(':').unwrap_or((u, ""));
            (n.to_string(), p.to_string())
        })
        .or(url.user.clone());
    let secs = a.max_time.unwrap_or(300.0);
    let secs = if secs.is_finite() {
        secs.clamp(0.001, 86_400.0)
    } else {
        300.0
    };
    req.timeout = Duration::from_secs_f64(secs);
    // Like curl: try every address (localhost may be ::1 first; the node listens on IPv4).
    let mut result = Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
    for addr in addrs {
        result = client::send(addr, &req);
        match &result {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            _ => break,
        }
    }
    let resp = match result {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {
            return (say(28, "Operation timed out"), true)
        }
        Err(_) => {
            let msg = format!(
                "Failed to connect to {} port {}: Connection refused",
                url.host, url.port
            );
            return (say(7, &msg), a.retry_connrefused);
        }
    };
    let transient = matches!(resp.status, 408 | 429 | 500 | 502 | 503 | 504);
    if a.fail && resp.status >= 400 {
        let msg = format!("The requested URL returned error: {}", resp.status);
        return (say(22, &msg), transient);
    }
    let written = match &a.output {
        Some(path) => std::fs::write(path, &resp.body),
        None => out.write_all(&resp.body).and_then(|_| out.flush()),
    };
    if written.is_err() {
        return (say(23, "Failure writing output to destination"), false);
    }
    (0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn env(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `sh -c script` with `env`; returns (status, stdout).
    fn run(script: &str, env: &HashMap<String, String>) -> (i32, String) {
        let mut out = Vec::new();
        let code = sh_with(&words(&["-c", script]), env, &mut out);
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn curl_flags() {
        let a = parse_curl_args(&words(&["-fsS", "http://localhost:5984/_up"])).unwrap();
        assert!(a.fail && a.silent && a.show_error);
        assert_eq!(a.url.as_deref(), Some("http://localhost:5984/_up"));
        assert!(parse_curl_args(&words(&["-Z"])).is_err());
    }

    #[test]
    fn shell_words_keep_quotes_together() {
        assert_eq!(
            shell_words(r#"curl -fsS "http://x:1/_up" || exit 1"#),
            vec!["curl", "-fsS", "http://x:1/_up", "||", "exit", "1"]
        );
        assert_eq!(shell_words(r#"printf '' "a b""#), vec!["printf", "", "a b"]);
    }

    #[test]
    fn and_or_lists_and_exit() {
        let e = env(&[]);
        assert_eq!(run("exit 3", &e).0, 3);
        assert_eq!(run("false || exit 1", &e).0, 1);
        assert_eq!(run("true && exit 4", &e).0, 4);
        assert_eq!(run("false && exit 4", &e).0, 1);
        assert_eq!(run("false && exit 4 || exit 5", &e).0, 5);
        assert_eq!(run("false; true", &e).0, 0);
        assert_eq!(run("exit 2; true", &e).0, 2);
        assert_eq!(run("wget x", &e).0, 127);
    }

    #[test]
    fn unsupported_syntax_is_refused_not_guessed() {
        let e = env(&[]);
        for script in [
            "echo $(id)",
            "curl x > /tmp/f",
            "curl x &",
            "(true)",
            "echo \"unterminated",
            "echo $1",
            "| grep x",
            "true |",
        ] {
            assert_eq!(run(script, &e).0, 2, "{script}");
        }
    }

    #[test]
    fn variables_expand_outside_single_quotes() {
        let e = env(&[("U", "ad min"), ("P", "p\"w")]);
        assert_eq!(
            run(r#"printf '%s|%s\n' "$U" "${P}""#, &e).1,
            "ad min|p\"w\n"
        );
        assert_eq!(run(r#"printf '%s\n' '$U'"#, &e).1, "$U\n");
        assert_eq!(run(r#"printf '%s\n' "$MISSING" x"#, &e).1, "\nx\n");
        assert_eq!(run(r#"printf '%s\n' "a\$U""#, &e).1, "a$U\n");
    }

    #[test]
    fn printf_reuses_its_format_and_knows_percent() {
        let mut out = Vec::new();
        assert_eq!(printf(&words(&["%s=%s;", "a", "1", "b"]), &mut out), 0);
        assert_eq!(String::from_utf8_lossy(&out), "a=1;b=;");
        let mut out = Vec::new();
        assert_eq!(printf(&words(&["100%%\\t\\\"x\\\"\\n"]), &mut out), 0);
        assert_eq!(String::from_utf8_lossy(&out), "100%\t\"x\"\n");
        assert_eq!(printf(&words(&["%d", "1"]), &mut Vec::new()), 1);
    }

    #[test]
    fn pipelines_feed_grep() {
        let e = env(&[]);
        assert_eq!(run(r#"printf 'a","b\n' | grep -qF '","'"#, &e).0, 0);
        assert_eq!(run(r#"printf '["a"]\n' | grep -qF '","'"#, &e).0, 1);
        assert_eq!(run("printf 'x\\ny\\n' | grep y", &e), (0, "y\n".into()));
        // The status is the last command's: a failing first command is seen through its output.
        assert_eq!(run("false | grep -q x", &e).0, 1);
        assert_eq!(run("printf x | grep -q 'a.b'", &e).0, 2);
    }

    #[test]
    fn curl_config_lines() {
        let text = "# comment\n\nuser = \"ad min:p\\\"w\\\\x\"\n--max-time 5\nsilent\nurl: http://h:1/x\n-H \"A: b\"\n";
        assert_eq!(
            curl_config_args(text).unwrap(),
            words(&[
                "--user",
                "ad min:p\"w\\x",
                "--max-time",
                "5",
                "--silent",
                "--url",
                "http://h:1/x",
                "-H",
                "A: b"
            ])
        );
        assert_eq!(
            curl_config_args("user=a:b\n").unwrap(),
            words(&["--user", "a:b"])
        );
        assert!(curl_config_args("user = \"open\n").is_err());
    }

    #[test]
    fn curl_reads_its_config_from_stdin() {
        let args = expand_config(
            &words(&["-fsS", "-K", "-", "http://h:1/x"]),
            &mut "user = \"a:b\"\n".as_bytes(),
        )
        .unwrap();
        let a = parse_curl_args(&args).unwrap();
        assert_eq!(a.user.as_deref(), Some("a:b"));
        assert_eq!(a.url.as_deref(), Some("http://h:1/x"));
        assert_eq!(
            curl_with(
                &words(&["-K", "/nonexistent/cfg"]),
                &mut io::empty(),
                &mut Vec::new()
            ),
            26
        );
    }

    #[test]
    fn curl_retries_until_the_server_answers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url = format!("http://127.0.0.1:{port}/x");
        // Refused, no retry asked: at once.
        let t = std::time::Instant::now();
        assert_eq!(curl(&words(&["-fsS", "--retry", "3", &url])), 7);
        assert!(t.elapsed() < Duration::from_millis(500));
        // Refused, retried: a server that appears after ~0.3 s is reached.
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let mut out = Vec::new();
        let args = words(&[
            "-fsS",
            "--retry",
            "20",
            "--retry-all-errors",
            "--retry-delay",
            "0.05",
            &url,
        ]);
        assert_eq!(curl_with(&args, &mut io::empty(), &mut out), 0);
        assert_eq!(out, b"ok");
        server.join().unwrap();
    }

    #[test]
    fn curl_exit_codes() {
        // nothing listens on this port
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url = format!("http://127.0.0.1:{port}/_up");
        assert_eq!(curl(&["-fsS".into(), url]), 7);
        assert_eq!(curl(&["-fsS".into()]), 3);
    }
}
