//! Decontamination: training instances that share a repository and function with an evaluation
//! instance, or whose text nearly duplicates one (word n-gram containment), are dropped.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::instance::{Instance, Task};

/// The free text an instance shows the agent.
pub fn instance_text(instance: &Instance) -> String {
    match &instance.task {
        Task::Localization { issue, .. }
        | Task::Reproduction { issue, .. }
        | Task::Review { issue, .. } => issue.clone(),
        Task::BugFixing {
            problem_statement, ..
        } => problem_statement.clone(),
        Task::Editing { instruction, .. } => instruction.clone(),
        Task::TestGeneration { target, .. } => format!(
            "{} {}",
            target.signature,
            target.docstring.clone().unwrap_or_default()
        ),
    }
}

fn ngrams(text: &str, n: usize) -> HashSet<Vec<String>> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() < n {
        return std::iter::once(words).filter(|w| !w.is_empty()).collect();
    }
    words.windows(n).map(<[String]>::to_vec).collect()
}

/// Share of `a`'s n-grams that also occur in `b`.
pub fn containment(a: &HashSet<Vec<String>>, b: &HashSet<Vec<String>>) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    a.intersection(b).count() as f64 / a.len() as f64
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dropped {
    pub instance_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecontamReport {
    pub kept: usize,
    pub dropped: Vec<Dropped>,
    pub ngram: usize,
    pub threshold: f64,
}

fn function_key(instance: &Instance) -> Option<(String, String, String)> {
    let function = match &instance.task {
        Task::TestGeneration { target, .. } => Some(target.qualname.clone()),
        _ => instance.bug.function.clone(),
    }?;
    Some((
        instance.project.name.clone(),
        instance.bug.file.clone(),
        function,
    ))
}

/// Splits `train` into kept instances and a report of the dropped ones.
pub fn decontaminate(
    train: Vec<Instance>,
    eval: &[Instance],
    ngram: usize,
    threshold: f64,
) -> (Vec<Instance>, DecontamReport) {
    let eval_functions: BTreeSet<(String, String, String)> =
        eval.iter().filter_map(function_key).collect();
    let eval_grams: Vec<(String, HashSet<Vec<String>>)> = eval
        .iter()
        .map(|i| (i.instance_id.clone(), ngrams(&instance_text(i), ngram)))
        .collect();
    // An inverted index from n-gram to eval instances keeps this linear in practice.
    let mut index: BTreeMap<&Vec<String>, Vec<usize>> = BTreeMap::new();
    for (i, (_, grams)) in eval_grams.iter().enumerate() {
        for gram in grams {
            index.entry(gram).or_default().push(i);
        }
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for instance in train {
        if let Some(key) = function_key(&instance).filter(|k| eval_functions.contains(k)) {
            dropped.push(Dropped {
                instance_id: instance.instance_id.clone(),
                reason: format!(
                    "same repository and function as an evaluation instance ({} {})",
                    key.0, key.2
                ),
            });
            continue;
        }
        let grams = ngrams(&instance_text(&instance), ngram);
        let mut candidates: BTreeSet<usize> = BTreeSet::new();
        for gram in &grams {
            if let Some(hits) = index.get(gram) {
                candidates.extend(hits);
            }
        }
        let near = candidates.into_iter().find_map(|i| {
            let score =
                containment(&grams, &eval_grams[i].1).max(containment(&eval_grams[i].1, &grams));
            (score >= threshold).then(|| (eval_grams[i].0.clone(), score))
        });
        match near {
            Some((eval_id, score)) => dropped.push(Dropped {
                instance_id: instance.instance_id.clone(),
                reason: format!(
                    "text overlaps evaluation instance {eval_id} ({:.0}% of {ngram}-grams)",
                    score * 100.0
                ),
            }),
            None => kept.push(instance),
        }
    }
    let report = DecontamReport {
        kept: kept.len(),
        dropped,
        ngram,
        threshold,
    };
    (kept, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{BugRef, ProjectRef, SCHEMA_VERSION};
    use crate::patch::FileEdits;

    fn inst(id: &str, project: &str, function: &str, issue: &str) -> Instance {
        Instance {
            schema_version: SCHEMA_VERSION,
            instance_id: id.into(),
            project: ProjectRef {
                name: project.into(),
                version: "1".into(),
                ecosystem: corpus::Ecosystem::Pypi,
                snapshot: "s".into(),
            },
            bug: BugRef {
                bug_id: id.into(),
                file: "a.py".into(),
                function: Some(function.into()),
                operators: vec![],
                line: 1,
                description: String::new(),
                seed: 0,
            },
            setup: FileEdits::new(),
            task: Task::Localization {
                issue: issue.into(),
                gold_files: vec!["a.py".into()],
            },
            validation: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn drops_shared_functions_and_near_duplicate_text() {
        let eval = vec![inst("e1", "p", "f", "calling p.f with an empty list raises IndexError instead of returning zero as the docs say")];
        for (train, kept) in [
            (inst("t1", "p", "f", "completely different words here"), false),
            (inst("t2", "q", "f", "completely different words here"), true),
            (inst("t3", "p", "g", "Hi! calling p.f with an empty list raises IndexError instead of returning zero as the docs say. Thanks"), false),
            (inst("t4", "p", "g", "p.g gives the wrong sign for negative numbers"), true),
        ] {
            let id = train.instance_id.clone();
            let (out, report) = decontaminate(vec![train], &eval, 5, 0.5);
            assert_eq!(out.len() == 1, kept, "{id}: {:?}", report.dropped);
        }
    }
}
