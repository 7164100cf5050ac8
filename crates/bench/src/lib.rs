//! Benchmarks of atomskill's parts. Each one measures a baseline in the same run and prints
//! ratios against it, so figures from different machines or loads stay comparable.

pub mod agent;
pub mod grading;
pub mod model;
pub mod mutants;
pub mod sandbox;
pub mod train;

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sandbox(#[from] ::sandbox::Error),
    #[error(transparent)]
    Agent(#[from] ::agent::Error),
    #[error(transparent)]
    Records(#[from] ::trajectory::Error),
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("benchmark task failed: {0}")]
    Task(String),
}

impl Error {
    fn io(context: &str, source: std::io::Error) -> Error {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}

/// Median of a sample, in the sample's unit.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(super::median(&mut []).is_nan());
    }
}
