//! The clipped objective on examples computed by hand (the numbers below were derived on paper
//! from the formulas in the module docs, not by running the code).

use candle_core::{Device, Tensor, Var};
use train::loss::{policy_loss, sft_loss, TokenInputs};
use train::{Algorithm, LossConfig};

struct Case {
    config: LossConfig,
    /// Ratios r (old log-probs are 0, so logp = ln r).
    ratios: Vec<f64>,
    advantages: Vec<f64>,
    mask: Vec<f64>,
    rollout: Option<Vec<f64>>,
    reference: Option<Vec<f64>>,
    normaliser: f64,
    loss: f64,
    /// d loss / d logp per token.
    grad: Vec<f64>,
    clipped: f64,
}

fn row(values: &[f64]) -> Tensor {
    Tensor::new(values, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn check(case: Case) {
    let logp: Vec<f64> = case.ratios.iter().map(|r| r.ln()).collect();
    let var = Var::from_tensor(&row(&logp)).unwrap();
    let inputs = TokenInputs {
        loss_mask: row(&case.mask),
        advantages: row(&case.advantages),
        old_logprobs: Some(row(&vec![0.0; logp.len()])),
        rollout_logprobs: case.rollout.as_deref().map(row),
        ref_logprobs: case.reference.as_deref().map(row),
    };
    let (loss, sums) =
        policy_loss(var.as_tensor(), &inputs, &case.config, case.normaliser).unwrap();
    let value = loss.to_scalar::<f64>().unwrap();
    assert!(
        (value - case.loss).abs() < 1e-9,
        "loss {value}, expected {}",
        case.loss
    );
    let grads = loss.backward().unwrap();
    let grad = grads
        .get(var.as_tensor())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (g, e) in grad.iter().zip(&case.grad) {
        assert!(
            (g - e).abs() < 1e-9,
            "gradient {grad:?}, expected {:?}",
            case.grad
        );
    }
    assert_eq!(sums.clipped, case.clipped);
}

fn no_tis(algorithm: Algorithm) -> LossConfig {
    LossConfig {
        tis_cap: None,
        ..LossConfig::for_algorithm(algorithm)
    }
}

#[test]
fn clipped_objective_by_hand() {
    // DAPO clip range [0.8, 1.28]. Tokens:
    //  1: r 1.5, A +1  -> clipped above: -1.28,          grad 0
    //  2: r 0.5, A +1  -> not clipped:   -0.5,           grad -A·r = -0.5
    //  3: r 0.5, A -2  -> clipped below: -(-2·0.8) = 1.6, grad 0
    //  4: r 1.1, A -2  -> not clipped:   2.2,            grad 2.2
    //  5: masked out (r 3, A 1).
    // Sum 2.02 over the 4 trained tokens of the whole batch -> 0.505; gradients / 4.
    check(Case {
        config: no_tis(Algorithm::Dapo),
        ratios: vec![1.5, 0.5, 0.5, 1.1, 3.0],
        advantages: vec![1.0, 1.0, -2.0, -2.0, 1.0],
        mask: vec![1.0, 1.0, 1.0, 1.0, 0.0],
        rollout: None,
        reference: None,
        normaliser: 4.0,
        loss: 0.505,
        grad: vec![0.0, -0.125, 0.0, 0.55, 0.0],
        clipped: 2.0,
    });
    // GRPO's symmetric range [0.8, 1.2]: token 4 (r 1.1) still inside; token 1 now clipped at
    // 1.2: -1.2 - 0.5 + 1.6 + 2.2 = 2.1. The batch has 10 trained tokens in all (normaliser 10).
    check(Case {
        config: no_tis(Algorithm::Grpo),
        ratios: vec![1.5, 0.5, 0.5, 1.1, 3.0],
        advantages: vec![1.0, 1.0, -2.0, -2.0, 1.0],
        mask: vec![1.0, 1.0, 1.0, 1.0, 0.0],
        rollout: None,
        reference: None,
        normaliser: 10.0,
        loss: 0.21,
        grad: vec![0.0, -0.05, 0.0, 0.22, 0.0],
        clipped: 2.0,
    });
}

#[test]
fn truncated_importance_weights_by_hand() {
    // Same tokens (DAPO), rollout log-probs 0, 0.1, 0, -1, 0 and cap 2: weights
    // exp(0 - rollout) = 1, e^-0.1 = 0.904837418, 1, e^1 -> capped at 2, (masked).
    // Sum: -1.28 - 0.5·0.904837418 + 1.6 + 2.2·2 = 4.267581291 -> / 4 = 1.066895323.
    // Gradients: 0, -0.5·0.904837418 / 4 = -0.113104677, 0, 2.2·2 / 4 = 1.1, 0.
    check(Case {
        config: LossConfig {
            tis_cap: Some(2.0),
            ..LossConfig::for_algorithm(Algorithm::Dapo)
        },
        ratios: vec![1.5, 0.5, 0.5, 1.1, 3.0],
        advantages: vec![1.0, 1.0, -2.0, -2.0, 1.0],
        mask: vec![1.0, 1.0, 1.0, 1.0, 0.0],
        rollout: Some(vec![0.0, 0.1, 0.0, -1.0, 0.0]),
        reference: None,
        normaliser: 4.0,
        loss: 1.066_895_322_8,
        grad: vec![0.0, -0.113_104_677_3, 0.0, 1.1, 0.0],
        clipped: 2.0,
    });
}

#[test]
fn k3_kl_by_hand() {
    // Advantages 0: only the KL term. ratios 1 (logp 0); reference log-probs ln 2, 0, -ln 2.
    // k3(d) = e^d - d - 1 with d = ref - logp: 2 - 0.693147181 - 1 = 0.306852819, 0,
    // 0.5 + 0.693147181 - 1 = 0.193147181. β = 0.5, normaliser 3:
    // loss = 0.5 · 0.5 / 3 = 0.083333333.
    // d k3 / d logp = 1 - e^d: -1, 0, 0.5 -> · β / 3: -0.166666667, 0, 0.083333333.
    let ln2 = std::f64::consts::LN_2;
    check(Case {
        config: LossConfig {
            kl_beta: 0.5,
            ..no_tis(Algorithm::Grpo)
        },
        ratios: vec![1.0, 1.0, 1.0],
        advantages: vec![0.0, 0.0, 0.0],
        mask: vec![1.0, 1.0, 1.0],
        rollout: None,
        reference: Some(vec![ln2, 0.0, -ln2]),
        normaliser: 3.0,
        loss: 0.5 * 0.5 / 3.0,
        grad: vec![-0.5 / 3.0, 0.0, 0.25 / 3.0],
        clipped: 0.0,
    });
}

#[test]
fn sft_loss_by_hand() {
    // logp -1, -2, -3 with mask 1, 0, 1 and 4 trained tokens in the whole batch:
    // loss = (1 + 3) / 4 = 1; gradient -1/4 on trained tokens.
    let var = Var::from_tensor(&row(&[-1.0, -2.0, -3.0])).unwrap();
    let (loss, sums) = sft_loss(var.as_tensor(), &row(&[1.0, 0.0, 1.0]), 4.0).unwrap();
    assert!((loss.to_scalar::<f64>().unwrap() - 1.0).abs() < 1e-12);
    let grad = loss.backward().unwrap();
    let grad = grad
        .get(var.as_tensor())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(grad, vec![-0.25, 0.0, -0.25]);
    assert_eq!((sums.n_tokens, sums.logprob), (2.0, -4.0));
}
