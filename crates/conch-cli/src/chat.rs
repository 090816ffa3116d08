//! `conch chat`: an interactive conversation in the terminal.

use anyhow::{bail, Result};
use conch_engine::{GenerateOptions, Generation, LoadedModel, Session};
use serde_json::{json, Value};
use std::io::{BufRead, Write};

pub fn message(role: &str, content: &str) -> Value {
    json!({ "role": role, "content": content })
}

/// The conversation rendered with the model's chat template and tokenized.
pub fn prompt_tokens(model: &LoadedModel, messages: &[Value]) -> Result<Vec<u32>> {
    Ok(model.chat_prompt(messages, None)?)
}

pub fn print_stats(out: &Generation) {
    let pp = out.prompt_tokens - out.reused_tokens;
    let rate = |n: usize, d: std::time::Duration| {
        if d.as_secs_f64() > 0.0 {
            n as f64 / d.as_secs_f64()
        } else {
            0.0
        }
    };
    eprintln!(
        "[prompt {} tokens ({} reused), {:.1} tok/s | reply {} tokens, {:.1} tok/s | {:?}]",
        out.prompt_tokens,
        out.reused_tokens,
        rate(pp, out.prefill_time),
        out.tokens.len(),
        rate(out.tokens.len(), out.decode_time),
        out.finish_reason
    );
}

const HELP: &str = "commands:
  /reset              start a new conversation (keeps the system prompt)
  /system TEXT        set the system prompt and start over
  /set NAME VALUE     temperature, top_k, top_p, min_p, repetition_penalty, seed, max_tokens
  /stats              toggle timing figures after each reply
  /help               this text
  /quit               leave (Ctrl-D works too)";

pub fn interactive(
    model: &LoadedModel,
    ctx: Option<usize>,
    mut opts: GenerateOptions,
    mut system: Option<String>,
) -> Result<()> {
    let mut session = Session::new(model, ctx);
    let mut messages: Vec<Value> = Vec::new();
    let mut stats = false;
    eprintln!(
        "{} — context {} tokens. /help for commands.",
        model.name,
        session.capacity()
    );
    if !model.has_own_chat_template {
        eprintln!("(this model has no chat template; using ChatML, which it may not know)");
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
            match name {
                "quit" | "exit" => return Ok(()),
                "help" => eprintln!("{HELP}"),
                "reset" => {
                    messages.clear();
                    session.reset();
                    eprintln!("(new conversation)");
                }
                "system" => {
                    system = (!rest.trim().is_empty()).then(|| rest.trim().to_string());
                    messages.clear();
                    session.reset();
                    eprintln!("(system prompt set; new conversation)");
                }
                "stats" => stats = !stats,
                "set" => match set_option(&mut opts, rest) {
                    Ok(()) => eprintln!("(ok)"),
                    Err(e) => eprintln!("error: {e}"),
                },
                _ => eprintln!("unknown command /{name}; /help lists them"),
            }
            continue;
        }
        messages.push(message("user", line));
        let mut convo = Vec::new();
        if let Some(s) = &system {
            convo.push(message("system", s));
        }
        convo.extend(messages.iter().cloned());
        let tokens = match prompt_tokens(model, &convo) {
            Ok(t) => t,
            Err(e) => {
                messages.pop();
                eprintln!("error: {e:#}");
                continue;
            }
        };
        let result = session.generate(&tokens, &opts, &mut |t| {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
            true
        });
        println!();
        match result {
            Ok(out) => {
                if stats {
                    print_stats(&out);
                }
                messages.push(message("assistant", &out.text));
            }
            Err(e) => {
                messages.pop();
                eprintln!("error: {e}");
            }
        }
    }
}

fn set_option(opts: &mut GenerateOptions, args: &str) -> Result<()> {
    let (name, value) = args
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow::anyhow!("usage: /set NAME VALUE"))?;
    let value = value.trim();
    let mut s = opts.sampling.clone();
    match name {
        "temperature" => s.temperature = value.parse()?,
        "top_k" => s.top_k = value.parse()?,
        "top_p" => s.top_p = value.parse()?,
        "min_p" => s.min_p = value.parse()?,
        "repetition_penalty" => s.repetition_penalty = value.parse()?,
        "presence_penalty" => s.presence_penalty = value.parse()?,
        "frequency_penalty" => s.frequency_penalty = value.parse()?,
        "seed" => s.seed = Some(value.parse()?),
        "max_tokens" => {
            opts.max_tokens = value.parse()?;
            return Ok(());
        }
        other => bail!("unknown setting '{other}'"),
    }
    s.validate().map_err(anyhow::Error::msg)?;
    opts.sampling = s;
    Ok(())
}
