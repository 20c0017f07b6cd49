//! The sources a run compares: our engine and one or more reference dumps. Opens the dumps,
//! names them, checks that they were made for this model and for the same cases, and picks
//! the roles of the accuracy verdict (the float64 truth and the float32 peer).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::engine::Config;
use crate::engine::WeightFormat;
use crate::validation::reference::{self, Case, Precision, Reference};
use crate::validation::result::{OURS, Role, Source};

/// One reference dump and the name its rows carry.
pub struct RefSource {
    pub name: String,
    pub reference: Reference,
    pub precision: Precision,
    /// The rounding of the weights the dump was made on.
    pub weights: WeightFormat,
}

pub struct Sources {
    /// The format of our engine's weights.
    pub weights: WeightFormat,
    pub refs: Vec<RefSource>,
    /// Index into `refs` of the truth: the first float64 dump.
    pub truth: Option<usize>,
    /// Index into `refs` of the peer: the first float32 dump, when there is a truth.
    pub peer: Option<usize>,
}

/// Every `MODEL/reference*` directory holding a manifest, in name order, with the manifest's
/// generator (only that is read here; the whole dump is checked when it is opened).
pub fn model_dumps(model_dir: &Path) -> Result<Vec<(PathBuf, Generator)>> {
    dumps_named(model_dir, "reference")
}

/// `validate --corpus`'s dumps when none is given: every `MODEL/corpus*` directory holding a
/// manifest, in name order.
pub fn corpus_dirs(model_dir: &Path) -> Result<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = dumps_named(model_dir, "corpus")?.into_iter().map(|(d, _)| d).collect();
    ensure!(
        !dirs.is_empty(),
        "no corpus dump in {}: pass --reference DIR, or make one with `python scripts/dump_reference.py \
         --model {} --corpus FILE --dtype float64 --out {}`",
        model_dir.display(),
        model_dir.display(),
        model_dir.join("corpus-f64").display()
    );
    Ok(dirs)
}

fn dumps_named(model_dir: &Path, prefix: &str) -> Result<Vec<(PathBuf, Generator)>> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        generator: Generator,
    }
    let mut dumps = Vec::new();
    let listing = std::fs::read_dir(model_dir).with_context(|| format!("listing {}", model_dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("listing {}", model_dir.display()))?;
        let manifest = entry.path().join("manifest.json");
        if entry.file_name().to_string_lossy().starts_with(prefix) && manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let head: Head = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a valid llorch reference manifest", manifest.display())
            })?;
            dumps.push((entry.path(), head.generator));
        }
    }
    dumps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(dumps)
}

/// A manifest's `generator`: who made the dump, with what.
pub type Generator = std::collections::BTreeMap<String, serde_json::Value>;

/// The reference directories of a model when none is given: every `MODEL/reference*` directory
/// holding a manifest made on the weights rounded as `weights` rounds them, in name order (so
/// `reference`, then `reference-f64`; `reference-bf16`, then `reference-bf16-f64`). Dumps
/// computed below float32 (PyTorch in bfloat16) are `llorch cost`'s, not references.
pub fn default_dirs(model_dir: &Path, weights: WeightFormat) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for (dir, generator) in model_dumps(model_dir)? {
        let dtype = generator.get("dtype").and_then(|d| d.as_str());
        let reduced = dtype.and_then(Precision::from_name).is_some_and(Precision::is_reduced);
        if reference::weights_as(&generator) == Ok(weights) && !reduced {
            dirs.push(dir);
        }
    }
    let rounding = match weights {
        WeightFormat::F32 => String::new(),
        other => format!(" --weights-as {other}"),
    };
    let suffix = match weights {
        WeightFormat::F32 => String::new(),
        other => format!("-{other}"),
    };
    ensure!(
        !dirs.is_empty(),
        "no reference for {} with {weights} weights: pass --reference DIR, or make one with \
         `python scripts/dump_reference.py --model {}{rounding} --out {}`",
        model_dir.display(),
        model_dir.display(),
        model_dir.join(format!("reference{suffix}")).display()
    );
    Ok(dirs)
}

impl Sources {
    /// Index into `refs` of the dump whose tensors feed isolated mode: the peer when there is a
    /// truth (so ours and the peer start each stage from the same input, and their errors
    /// against the truth stay comparable), else the first dump.
    pub fn feed(&self) -> usize {
        self.peer.unwrap_or(0)
    }

    /// Opens every dump (`open_dumps`) and checks it against the rounding of our engine's
    /// weights (`weights`) and that it computed in float32 or float64.
    pub fn open(dirs: &[PathBuf], config: &Config, weights: WeightFormat) -> Result<Sources> {
        let refs = open_dumps(dirs, config)?;
        for r in &refs {
            let dir = r.reference.dir.display();
            ensure!(
                r.reference.manifest.corpus.is_none(),
                "{dir} is a corpus dump (every position's logits over a text's windows): check it with \
                 `llorch validate --corpus FILE --reference {dir}`"
            );
            ensure!(
                !r.precision.is_reduced(),
                "{dir} was computed in {}: it shows what that precision costs (`llorch cost`), not \
                 what correct arithmetic gives, and validate compares only with float32 and float64 \
                 references",
                r.precision.name()
            );
            let rounding = r.weights;
            ensure!(
                rounding == weights,
                "{dir} was made on the model's weights rounded to {rounding}, and our engine holds them \
                 in {weights}: the two would differ by the rounding, not by their arithmetic; run \
                 with --weights {rounding}, or dump a reference with `scripts/dump_reference.py \
                 --weights-as {weights}`"
            );
        }
        let truth = refs.iter().position(|r| r.precision == Precision::Float64);
        let peer = truth.and_then(|_| refs.iter().position(|r| r.precision == Precision::Float32));
        Ok(Sources { weights, refs, truth, peer })
    }

    /// The case names of the dumps (all dumps have the same).
    pub fn case_names(&self) -> Vec<&str> {
        self.refs[0].reference.manifest.cases.iter().map(|c| c.name.as_str()).collect()
    }

    /// Every dump's entry for case `name`, in the order of `refs`.
    pub fn case(&self, name: &str) -> Vec<&Case> {
        self.refs
            .iter()
            .map(|r| r.reference.manifest.cases.iter().find(|c| c.name == name).expect("checked at open"))
            .collect()
    }

    /// `--case NAME` or every case.
    pub fn select_cases(&self, name: Option<&str>) -> Result<Vec<String>> {
        let names = self.case_names();
        match name {
            None => Ok(names.iter().map(|n| n.to_string()).collect()),
            Some(n) if names.contains(&n) => Ok(vec![n.to_string()]),
            Some(n) => bail!("no case {n:?} in {}; it has {names:?}", self.refs[0].reference.dir.display()),
        }
    }

    /// The sources as the report lists them: ours, then each dump with its role.
    pub fn describe(&self) -> Vec<Source> {
        let mut out = vec![Source {
            name: OURS.into(),
            dir: None,
            precision: Precision::Float32,
            weights: self.weights,
            role: Role::Engine,
            generator: None,
            omitted: Vec::new(),
        }];
        for (i, r) in self.refs.iter().enumerate() {
            let role = if Some(i) == self.truth {
                Role::Truth
            } else if Some(i) == self.peer {
                Role::Peer
            } else {
                Role::Reference
            };
            out.push(Source {
                name: r.name.clone(),
                dir: Some(r.reference.dir.display().to_string()),
                precision: r.precision,
                weights: r.weights,
                role,
                generator: serde_json::to_value(&r.reference.manifest.generator).ok(),
                omitted: r.reference.manifest.omitted.clone(),
            });
        }
        out
    }
}

/// Opens every dump, checks it against the model and against the first dump's cases, and names
/// it: the manifest's generator name, told apart by directory (and a number) when two are alike.
pub fn open_dumps(dirs: &[PathBuf], config: &Config) -> Result<Vec<RefSource>> {
    let mut refs: Vec<RefSource> = Vec::new();
    let mut seen = Vec::new();
    for dir in dirs {
        // The same dump twice would only compare it with itself.
        if let Ok(canonical) = dir.canonicalize() {
            ensure!(!seen.contains(&canonical), "{} is given twice as a reference", dir.display());
            seen.push(canonical);
        }
        let reference = Reference::open(dir)?;
        reference.check_model(config)?;
        let precision = reference.precision()?;
        let weights = reference.weights_as()?;
        let mut name = reference.label();
        // Two dumps of one kind (a fresh one beside an old one, say) are told apart by their
        // directories, and numbered if even those are alike.
        if name == OURS || refs.iter().any(|r| r.name == name) {
            name = format!("{name}@{}", reference.dir_name());
        }
        let base = name.clone();
        for n in 2.. {
            if !refs.iter().any(|r| r.name == name) {
                break;
            }
            name = format!("{base}#{n}");
        }
        refs.push(RefSource { name, reference, precision, weights });
    }
    if let Some((first, rest)) = refs.split_first() {
        for other in rest {
            same_cases(first, other)?;
        }
    }
    Ok(refs)
}

/// Two dumps compared in one run must describe the same cases: the same prompts, tokens and
/// settings. Otherwise their tensors are answers to different questions.
fn same_cases(a: &RefSource, b: &RefSource) -> Result<()> {
    let names = |r: &RefSource| r.reference.manifest.cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let (na, nb) = (names(a), names(b));
    let mismatch = |what: String| -> Result<()> {
        bail!(
            "the references {} and {} were made for other cases: {what}; dump both with the same \
             --cases file",
            a.reference.dir.display(),
            b.reference.dir.display()
        )
    };
    let (mut sa, mut sb) = (na.clone(), nb.clone());
    sa.sort();
    sb.sort();
    if sa != sb {
        return mismatch(format!("cases {na:?} and {nb:?}"));
    }
    for ca in &a.reference.manifest.cases {
        let cb = b.reference.manifest.cases.iter().find(|c| c.name == ca.name).expect("same names");
        let differ = if ca.token_ids != cb.token_ids {
            Some(format!("token ids {:?} and {:?}", ca.token_ids, cb.token_ids))
        } else if ca.sampling != cb.sampling {
            Some(format!("sampling {:?} and {:?}", ca.sampling, cb.sampling))
        } else if ca.max_new_tokens != cb.max_new_tokens {
            Some(format!("max_new_tokens {} and {}", ca.max_new_tokens, cb.max_new_tokens))
        } else {
            None
        };
        if let Some(what) = differ {
            return mismatch(format!("case {:?} has {what}", ca.name));
        }
    }
    Ok(())
}
