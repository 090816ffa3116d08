//! The `conch` command line.

mod bench;
mod chat;
mod inspect;
mod progress;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use conch_engine::{GenerateOptions, LoadedModel, SamplingParams, Session};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "conch",
    version,
    about = "Run open-weight language models on your own computer"
)]
struct Cli {
    /// Worker threads for the numeric kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// Where the family app keeps its data.
#[derive(Args)]
struct StorageArgs {
    /// Directory of the app's SQLite database [default: $XDG_DATA_HOME/conch or ~/.local/share/conch].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the app's data in PostgreSQL instead: postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Talk with a model (interactive, streaming, multi-turn). Type /help inside for commands.
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// A system prompt for the conversation.
        #[arg(long)]
        system: Option<String>,
    },
    /// Generate a reply to one prompt and stream it to stdout.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gen: GenArgs,
        /// The prompt.
        prompt: String,
        #[arg(long)]
        system: Option<String>,
        /// Continue the prompt as plain text instead of wrapping it in the chat template.
        #[arg(long)]
        raw: bool,
        /// Print timing figures, and for MoE models the tokens routed to each expert per layer,
        /// to stderr afterwards.
        #[arg(long)]
        stats: bool,
        /// Print the prompt as the model sees it (template applied) to stderr first.
        #[arg(long)]
        show_prompt: bool,
    },
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Require `Authorization: Bearer KEY` on /v1 requests.
        #[arg(long)]
        api_key: Option<String>,
        /// Sequences generated at the same time.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Requests that may wait for a free sequence before new ones get 429.
        #[arg(long, default_value_t = 64)]
        max_queue: usize,
        #[command(flatten)]
        storage: StorageArgs,
        /// The memoir mode's offline speech models (what scripts/fetch-speech installed); default
        /// $CONCH_SPEECH_DIR, else ~/.cache/conch/speech.
        #[arg(long)]
        speech_dir: Option<PathBuf>,
    },
    /// Write the family app's feedback as training data (JSON Lines) to stdout or a file.
    Export {
        /// trl-preference, trl-kto, openai-sft or openai-preference.
        #[arg(long)]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Show a model file's metadata, tensors and parameter count.
    Inspect {
        /// A GGUF file or a Hugging Face model directory.
        model: PathBuf,
        /// Show every metadata value in full (long arrays are shortened otherwise).
        #[arg(long)]
        full: bool,
    },
    /// Print the token ids of a text as a JSON array.
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        text: String,
        /// Do not add BOS/EOS even where the model's settings say to.
        #[arg(long)]
        no_special: bool,
        /// Turn special-token texts such as <|im_start|> into their ids.
        #[arg(long)]
        parse_special: bool,
    },
    /// Print the logits of every position of a token sequence as JSON, from one forward pass.
    Logits {
        #[command(flatten)]
        model: ModelArgs,
        /// Token ids separated by spaces or commas.
        #[arg(long)]
        tokens: String,
    },
    /// Prompt-processing and generation speed, as llama-bench measures them.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt tokens per prefill run (0 skips).
        #[arg(long, default_value_t = 512)]
        pp: usize,
        /// Tokens generated per decode run (0 skips).
        #[arg(long, default_value_t = 128)]
        tg: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Quantize a Hugging Face directory or an F32/F16/BF16 GGUF to a GGUF that llama.cpp also loads.
    Quantize {
        input: PathBuf,
        output: PathBuf,
        /// Q8_0, Q4_0, Q4_K or Q6_K.
        #[arg(value_name = "TYPE")]
        dtype: String,
        /// Quantize every eligible tensor to TYPE, the output matrix included (llama-quantize --pure).
        #[arg(long)]
        pure: bool,
    },
    /// Write a random-weight model of realistic shape (for benchmarks).
    Synth {
        /// qwen3moe, mixtral, qwen3, ...
        #[arg(long, required_unless_present = "list")]
        arch: Option<String>,
        /// A preset of that architecture (`--list` shows them).
        #[arg(long, required_unless_present = "list")]
        preset: Option<String>,
        /// Where to write (a .gguf file, or a directory for safetensors).
        #[arg(long, required_unless_present = "list")]
        out: Option<PathBuf>,
        /// List the presets instead.
        #[arg(long)]
        list: bool,
        /// gguf, or safetensors (a Hugging Face directory).
        #[arg(long, default_value = "gguf")]
        format: String,
        /// F32, F16 or BF16.
        #[arg(long, default_value = "F16")]
        dtype: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Perplexity of a text file with llama.cpp's method (chunks of --ctx tokens, default 512).
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// A GGUF file or a Hugging Face model directory.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Context length (default: the model's own).
    #[arg(long)]
    ctx: Option<usize>,
}

#[derive(Args, Clone)]
struct GenArgs {
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    min_p: Option<f32>,
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long)]
    presence_penalty: Option<f32>,
    #[arg(long)]
    frequency_penalty: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this text (may be given several times).
    #[arg(long)]
    stop: Vec<String>,
}

impl GenArgs {
    fn options(&self, defaults: &SamplingParams) -> Result<GenerateOptions> {
        let mut s = defaults.clone();
        if let Some(v) = self.temperature {
            s.temperature = v;
        }
        if let Some(v) = self.top_k {
            s.top_k = v;
        }
        if let Some(v) = self.top_p {
            s.top_p = v;
        }
        if let Some(v) = self.min_p {
            s.min_p = v;
        }
        if let Some(v) = self.repetition_penalty {
            s.repetition_penalty = v;
        }
        if let Some(v) = self.presence_penalty {
            s.presence_penalty = v;
        }
        if let Some(v) = self.frequency_penalty {
            s.frequency_penalty = v;
        }
        s.seed = self.seed.or(s.seed);
        s.validate().map_err(anyhow::Error::msg)?;
        Ok(GenerateOptions {
            max_tokens: self.max_tokens,
            sampling: s,
            stop_strings: self.stop.clone(),
            ..Default::default()
        })
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    conch_kernels::pool::set_threads(
        cli.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );
    match cli.command {
        Command::Chat { model, gen, system } => {
            let loaded = load(&model.model)?;
            chat::interactive(
                &loaded,
                model.ctx,
                gen.options(&loaded.default_sampling)?,
                system,
            )
        }
        Command::Run {
            model,
            gen,
            prompt,
            system,
            raw,
            stats,
            show_prompt,
        } => {
            let loaded = load(&model.model)?;
            let opts = gen.options(&loaded.default_sampling)?;
            let tokens = if raw {
                loaded.tokenizer.encode(&prompt, true, false)?
            } else {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(chat::message("system", &s));
                }
                messages.push(chat::message("user", &prompt));
                chat::prompt_tokens(&loaded, &messages)?
            };
            if show_prompt {
                eprintln!("{}", loaded.tokenizer.decode(&tokens, false));
            }
            let mut session = Session::new(&loaded, model.ctx);
            if stats {
                session.track_experts();
            }
            let mut stdout = std::io::stdout();
            let out = session.generate(&tokens, &opts, &mut |t| {
                let _ = stdout.write_all(t.as_bytes());
                let _ = stdout.flush();
                true
            })?;
            println!();
            if stats {
                chat::print_stats(&out);
                if let (Some(counts), Some(moe)) =
                    (session.expert_counts(), &loaded.model.config().moe)
                {
                    inspect::print_expert_counts(counts, moe.n_expert());
                }
            }
            Ok(())
        }
        Command::Inspect { model, full } => inspect::inspect(&model, full),
        Command::Export {
            format,
            output,
            storage,
        } => {
            let format: conch_app::ExportFormat = format.parse()?;
            let config = conch_server::ServerConfig {
                data_dir: storage.data_dir,
                database_url: storage.database_url,
                ..Default::default()
            };
            let lines = tokio::runtime::Runtime::new()?.block_on(async {
                let store = conch_server::open_store(&config).await?;
                let lines = store.export_household(format).await;
                store.close().await;
                anyhow::Ok(lines?)
            })?;
            match output {
                Some(path) => std::fs::write(&path, lines)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(lines.as_bytes())?,
            }
            Ok(())
        }
        Command::Serve {
            model,
            host,
            port,
            api_key,
            parallel,
            max_queue,
            storage,
            speech_dir,
        } => {
            let loaded = std::sync::Arc::new(load(&model.model)?);
            let config = conch_server::ServerConfig {
                host,
                port,
                api_key,
                parallel,
                ctx: model.ctx.unwrap_or(0),
                max_queue,
                data_dir: storage.data_dir,
                database_url: storage.database_url,
                speech_dir,
            };
            match (&config.database_url, &config.data_dir) {
                (Some(_), _) => eprintln!("app data: in the PostgreSQL database given"),
                (None, Some(dir)) => eprintln!("app data: {}", dir.display()),
                (None, None) => {
                    if let Some(dir) = conch_app::default_data_dir() {
                        eprintln!("app data: {}", dir.display());
                    }
                }
            }
            eprintln!(
                "serving {} on http://{}:{}/v1 (Ctrl-C stops)",
                loaded.name, config.host, config.port
            );
            eprintln!("the family app: http://{}:{}/", config.host, config.port);
            tokio::runtime::Runtime::new()?.block_on(conch_server::serve(loaded, config))?;
            Ok(())
        }
        Command::Tokenize {
            model,
            text,
            no_special,
            parse_special,
        } => {
            let loaded = load(&model.model)?;
            let ids = loaded.tokenizer.encode(&text, !no_special, parse_special)?;
            println!("{}", serde_json::to_string(&ids)?);
            Ok(())
        }
        Command::Logits { model, tokens } => {
            let ids = parse_token_list(&tokens)?;
            let loaded = load(&model.model)?;
            let ctx = model.ctx.unwrap_or(ids.len()).max(ids.len());
            let mut cache = loaded.model.new_cache(ctx);
            let logits = loaded.model.forward(&ids, &mut cache, true)?;
            let vocab = loaded.model.config().vocab_size;
            let rows: Vec<&[f32]> = logits.chunks(vocab).collect();
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "logits": rows }))?
            );
            Ok(())
        }
        Command::Bench {
            model,
            pp,
            tg,
            reps,
            json,
        } => {
            let loaded = load(&model.model)?;
            let r = bench::bench(&loaded, pp, tg, reps)?;
            let threads = conch_kernels::pool::threads();
            if json {
                let v = serde_json::json!({
                    "model": loaded.name, "threads": threads, "reps": reps, "n_prompt": pp, "n_gen": tg,
                    "pp_tokens_per_s": r.pp.map(|x| x.0), "pp_sd": r.pp.map(|x| x.1),
                    "tg_tokens_per_s": r.tg.map(|x| x.0), "tg_sd": r.tg.map(|x| x.1),
                });
                println!("{v}");
            } else {
                println!("| model | threads | test | t/s |\n|---|---|---|---|");
                if let Some((m, sd)) = r.pp {
                    println!(
                        "| {} | {threads} | pp{pp} | {m:.2} ± {sd:.2} |",
                        loaded.name
                    );
                }
                if let Some((m, sd)) = r.tg {
                    println!(
                        "| {} | {threads} | tg{tg} | {m:.2} ± {sd:.2} |",
                        loaded.name
                    );
                }
            }
            Ok(())
        }
        Command::Quantize {
            input,
            output,
            dtype,
            pure,
        } => {
            let target = conch_kernels::DType::from_name(&dtype)
                .with_context(|| format!("unknown type '{dtype}' (Q8_0, Q4_0, Q4_K, Q6_K)"))?;
            let report = conch_convert::quantize(
                &input,
                &output,
                target,
                &conch_convert::QuantizeOptions { pure },
            )?;
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            println!(
                "{}: {} tensors, {:.1} MiB -> {:.1} MiB",
                report.output.display(),
                report.tensors.len(),
                report.bytes_in as f64 / (1 << 20) as f64,
                report.bytes_out as f64 / (1 << 20) as f64
            );
            Ok(())
        }
        Command::Synth {
            arch,
            preset,
            out,
            list,
            format,
            dtype,
            seed,
        } => {
            let (Some(arch), Some(preset), Some(out), false) = (arch, preset, out, list) else {
                for p in conch_convert::presets() {
                    println!("{p:?}");
                }
                return Ok(());
            };
            let format = match format.as_str() {
                "gguf" => conch_convert::SynthFormat::Gguf,
                "safetensors" => conch_convert::SynthFormat::Safetensors,
                other => bail!("unknown format '{other}' (gguf, safetensors)"),
            };
            let dtype = conch_kernels::DType::from_name(&dtype)
                .with_context(|| format!("unknown type '{dtype}' (F32, F16, BF16)"))?;
            let report = conch_convert::synth(
                &arch,
                &preset,
                &out,
                &conch_convert::SynthOptions {
                    seed,
                    format,
                    dtype,
                },
            )?;
            println!(
                "{}: {:.3} B parameters, {:.3} B active per token, {:.1} MiB",
                report
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                report.params.total as f64 / 1e9,
                report.params.active as f64 / 1e9,
                report.bytes as f64 / (1 << 20) as f64
            );
            Ok(())
        }
        Command::Perplexity { model, file } => {
            let ctx = model.ctx.unwrap_or(512);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let loaded = load(&model.model)?;
            let result = conch_engine::perplexity(&loaded, &text, ctx, &mut |done, total, ppl| {
                eprintln!("[{done}/{total}] {ppl:.4}");
            })?;
            println!(
                "chunks: {}, scored tokens: {}, ctx: {ctx}",
                result.chunks, result.scored_tokens
            );
            println!("perplexity: {:.4}", result.perplexity);
            Ok(())
        }
    }
}

fn load(path: &Path) -> Result<LoadedModel> {
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    progress::warm_page_cache(path)?;
    Ok(conch_engine::load(path)?)
}

fn parse_token_list(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .with_context(|| format!("'{t}' is not a token id"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--tokens holds no token ids");
    }
    Ok(ids)
}
