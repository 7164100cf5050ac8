//! Fused CPU kernels with hand-written backward passes for the element-wise parts of a training
//! step: RMSNorm, the SwiGLU gate `silu(g) · u`, and the log-probability of a target token.
//!
//! Written with candle's element-wise ops, each of these is a chain of passes over (and new
//! tensors of) activation-sized data, and its backward pass as many again, plus candle's
//! gradient accumulation (a zeros tensor and an add) at every node. Silu's backward alone is
//! eight passes. Here a forward pass reads its inputs once and writes one output, and a
//! backward pass reads what it needs once and writes each gradient once; the graph holds one
//! node per op. Rows are split over candle's own CPU pool (`candle_core::utils::barrier_pool`),
//! the one its element-wise ops use, so the kernels never compete with a second pool for the
//! cores. The exponential is a polynomial the compiler vectorises ([`exp_f32`]).
//!
//! Only f32 and f64 on the CPU take these kernels; any other dtype or device gets the same
//! function written with candle's ops (and their autograd), so the CUDA path is unchanged.
//! `bench train` measures the difference (BENCHMARKS.md).

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Storage, Tensor, D};

use crate::{Error, Result};

/// `w · x / sqrt(mean(x²) + eps)` over the last dimension, statistics in f32 (as transformers'
/// RMSNorm): the fused kernel for f32/f64 CPU tensors, candle's ops otherwise.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !fusable(x) || weight.dtype() != x.dtype() {
        return rms_norm_unfused(x, weight, eps);
    }
    let dim = x.dim(D::Minus1)?;
    if weight.dims() != [dim] {
        return Err(Error::Input(format!(
            "RMSNorm weight has shape {:?} for rows of {dim}",
            weight.dims()
        )));
    }
    let op = RmsNorm { dim, eps };
    Ok(x.contiguous()?
        .apply_op2_arc(&weight.contiguous()?, std::sync::Arc::new(Box::new(op)))?)
}

/// [`rms_norm`] with candle's element-wise ops.
pub fn rms_norm_unfused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(crate::layers::compute_dtype(dtype))?;
    let variance = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_div(&(variance + eps)?.sqrt()?)?;
    Ok(normed.to_dtype(dtype)?.broadcast_mul(weight)?)
}

/// `silu(gate) · up`, element by element: the fused kernel for f32/f64 CPU tensors of one
/// shape, candle's ops otherwise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !fusable(gate) || gate.dtype() != up.dtype() || gate.dims() != up.dims() {
        return swiglu_unfused(gate, up);
    }
    Ok(gate
        .contiguous()?
        .apply_op2_arc(&up.contiguous()?, std::sync::Arc::new(Box::new(SwiGlu)))?)
}

/// [`swiglu`] with candle's element-wise ops.
pub fn swiglu_unfused(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((gate.silu()? * up)?)
}

/// `out[n] = logits[n, targets[n]] − log Σ_v exp(logits[n, v])` for `rows × vocab` logits and
/// u32 targets (`rows`, each inside the vocabulary: checked): the fused kernel for f32/f64 CPU
/// logits, candle's ops otherwise. Differentiable with respect to the logits.
pub fn target_log_softmax(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    if targets.dims() != [rows] || targets.dtype() != DType::U32 {
        return Err(Error::Input(format!(
            "targets must be u32 of shape [{rows}], got {:?} {:?}",
            targets.dtype(),
            targets.dims()
        )));
    }
    if !fusable(logits) {
        return target_log_softmax_unfused(logits, targets);
    }
    let targets = targets.to_vec1::<u32>()?;
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Input(format!(
            "target token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let op = TargetLogSoftmax { vocab, targets };
    Ok(logits
        .contiguous()?
        .apply_op1_arc(std::sync::Arc::new(Box::new(op)))?)
}

/// [`target_log_softmax`] with candle's element-wise ops (the max is detached: shifting by a
/// constant changes neither value nor gradient).
pub fn target_log_softmax_unfused(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_z = crate::layers::log_sum_exp_last_dim(logits)?;
    let picked = logits.gather(&targets.unsqueeze(1)?.contiguous()?, D::Minus1)?;
    Ok((picked - log_z)?.squeeze(1)?)
}

fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// `e^x` in f32 without a library call, so loops over slices vectorise: `x = n ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, `e^r` from Cephes' degree-7 polynomial (within 2 ulp of `f32::exp` over
/// the range, tested), `2^n` built in the exponent bits. Inputs are clamped to
/// `[-87.3, 88.3]`, so `e^x` underflows to about 1e-38 instead of to 0 (a masked score's weight
/// stays negligible) and never overflows; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let n_bits = shifted.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e_r * scale
}

/// What the kernels need of f32 and f64 (also used by the optimiser's in-place kernels).
pub trait Float:
    candle_core::WithDType
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    /// The larger of two (NaN-free) values, without `f32::max`'s NaN handling.
    #[inline(always)]
    fn larger(self, other: Self) -> Self {
        if self > other {
            self
        } else {
            other
        }
    }
    fn of_f64(v: f64) -> Self;
    fn of_usize(v: usize) -> Self;
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn of_f64(v: f64) -> Self {
        v as f32
    }
    fn of_usize(v: usize) -> Self {
        v as f32
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn of_f64(v: f64) -> Self {
        v
    }
    fn of_usize(v: usize) -> Self {
        v as f64
    }
}

/// Lanes of the partial sums in row reductions: independent accumulators let the compiler
/// vectorise a sum it must otherwise add in order.
const LANES: usize = 16;

fn sum_lanes<T: Float>(xs: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::ZERO; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x);
        }
    }
    let mut total = T::ZERO;
    for &x in chunks.remainder() {
        total += f(x);
    }
    acc.iter().fold(total, |s, &a| s + a)
}

/// `Σ f(a_i, b_i)` with [`LANES`] partial sums.
fn sum_lanes2<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> T {
    let mut acc = [T::ZERO; LANES];
    let mut chunks_a = a.chunks_exact(LANES);
    let mut chunks_b = b.chunks_exact(LANES);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += f(x, y);
        }
    }
    let mut total = T::ZERO;
    for (&x, &y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        total += f(x, y);
    }
    acc.iter().fold(total, |s, &v| s + v)
}

/// A buffer that the pool's threads fill in disjoint row ranges.
struct Rows<'a, T> {
    ptr: *mut T,
    len: usize,
    row: usize,
    _owner: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: threads only reach the buffer through `Rows::get` with disjoint row ranges (each
// range is handed to exactly one thread by `execute_chunked`).
unsafe impl<T: Send> Sync for Rows<'_, T> {}

impl<'a, T> Rows<'a, T> {
    fn new(buffer: &'a mut [T], row: usize) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            row,
            _owner: std::marker::PhantomData,
        }
    }

    /// The rows `range`, cut at `limit` elements (for a short last block).
    ///
    /// # Safety
    /// No two live slices may come from overlapping ranges.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_clamped(&self, range: &Range<usize>, limit: usize) -> &mut [T] {
        let start = range.start * self.row;
        let end = (range.end * self.row).min(limit).min(self.len);
        assert!(start <= end, "rows out of the buffer");
        // SAFETY: in bounds (checked), and disjoint from every other live slice (the caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }

    /// The rows `range`.
    ///
    /// # Safety
    /// No two live slices may come from overlapping ranges.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, range: &Range<usize>) -> &mut [T] {
        let (start, end) = (range.start * self.row, range.end * self.row);
        assert!(end <= self.len, "rows out of the buffer");
        // SAFETY: in bounds (checked), and disjoint from every other live slice (the caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// Runs `f` over disjoint ranges of `rows` on candle's CPU pool.
fn for_rows(rows: usize, f: impl Fn(Range<usize>) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(rows, f);
}

/// The part of `data` that a contiguous `layout` covers.
fn slice<'a, T>(data: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::Msg(
            "fused kernel: a non-contiguous input".into(),
        )),
    }
}

/// Runs `f` on the contiguous CPU data of `t`.
fn with_slice<T: Float, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(slice(cpu.as_slice::<T>()?, layout)?),
        _ => Err(candle_core::Error::Msg(
            "fused kernel: a tensor off the CPU".into(),
        )),
    }
}

fn unsupported(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: f32 or f64 CPU tensors only"))
}

/// Runs the f32 or f64 instance of a kernel on two storages of one dtype.
macro_rules! by_dtype2 {
    ($op:expr, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => CpuStorage::F32($body),
            (CpuStorage::F64($x), CpuStorage::F64($y)) => CpuStorage::F64($body),
            _ => return Err(unsupported($op)),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

struct RmsNorm {
    dim: usize,
    eps: f64,
}

/// `1 / sqrt(mean(x²) + eps)` of one row.
fn inv_rms<T: Float>(row: &[T], eps: f64) -> T {
    let mean = sum_lanes(row, |x| x * x) / T::of_usize(row.len());
    T::ONE / (mean + T::of_f64(eps)).sqrt()
}

fn rms_norm_fwd<T: Float>(x: &[T], w: &[T], dim: usize, eps: f64) -> Vec<T> {
    let mut out = vec![T::ZERO; x.len()];
    let rows = Rows::new(&mut out, dim);
    for_rows(x.len() / dim, |range| {
        // SAFETY: `for_rows` hands out disjoint ranges.
        let out = unsafe { rows.get(&range) };
        let x = &x[range.start * dim..range.end * dim];
        for (o, x) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
            let r = inv_rms(x, eps);
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                *o = w * (x * r);
            }
        }
    });
    out
}

/// Rows per work unit of the RMSNorm backward pass (and per partial sum of `dw`).
const NORM_BLOCK_ROWS: usize = 16;

/// `dx = r (w g − x̂ · mean(w g x̂))` with `x̂ = r x`, and `dw = Σ_rows g x̂` (when wanted).
fn rms_norm_bwd<T: Float>(
    x: &[T],
    w: &[T],
    g: &[T],
    dim: usize,
    eps: f64,
    want_dw: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let n_rows = x.len() / dim;
    let n_blocks = n_rows.div_ceil(NORM_BLOCK_ROWS);
    let mut dx = vec![T::ZERO; x.len()];
    // One partial `dw` per fixed block of rows, summed in block order at the end: the result
    // is bit-identical however the pool splits the work (a resumed run must match).
    let mut partials = vec![T::ZERO; if want_dw { n_blocks * dim } else { 0 }];
    let dx_blocks = Rows::new(&mut dx, dim * NORM_BLOCK_ROWS);
    let dw_blocks = Rows::new(&mut partials, if want_dw { dim } else { 0 });
    let n = T::of_usize(dim);
    for_rows(n_blocks, |blocks| {
        let row_span = blocks.start * NORM_BLOCK_ROWS..(blocks.end * NORM_BLOCK_ROWS).min(n_rows);
        // SAFETY: `for_rows` hands out disjoint block ranges; the last block may be short.
        let dx = unsafe { dx_blocks.get_clamped(&blocks, x.len()) };
        let dw_parts = unsafe { dw_blocks.get(&blocks) };
        let span = row_span.start * dim..row_span.end * dim;
        let (x, g) = (&x[span.clone()], &g[span]);
        let mut wg = vec![T::ZERO; dim];
        for (i, ((dx, x), g)) in dx
            .chunks_exact_mut(dim)
            .zip(x.chunks_exact(dim))
            .zip(g.chunks_exact(dim))
            .enumerate()
        {
            let r = inv_rms(x, eps);
            for ((wg, &w), &g) in wg.iter_mut().zip(w).zip(g) {
                *wg = w * g;
            }
            // r · mean(w g x̂) = r³ · Σ w g x / n
            let c = r * r * r * sum_lanes2(&wg, x, |a, b| a * b) / n;
            for ((dx, &x), &wg) in dx.iter_mut().zip(x).zip(&wg) {
                *dx = r * wg - c * x;
            }
            if want_dw {
                let block = i / NORM_BLOCK_ROWS;
                let dw = &mut dw_parts[block * dim..(block + 1) * dim];
                for ((dw, &x), &g) in dw.iter_mut().zip(x).zip(g) {
                    *dw += g * x * r;
                }
            }
        }
    });
    let dw = want_dw.then(|| {
        let mut total = vec![T::ZERO; dim];
        for part in partials.chunks_exact(dim) {
            for (t, &p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        total
    });
    (dx, dw)
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let storage = by_dtype2!("fused RMSNorm", x, w, |x, w| rms_norm_fwd(
            slice(x, x_layout)?,
            slice(w, w_layout)?,
            self.dim,
            self.eps
        ));
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            op: &RmsNorm,
            x: &Tensor,
            w: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
            let want_dw = w.track_op();
            let (dx, dw) = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| {
                    with_slice::<T, _>(grad, |gs| {
                        Ok(rms_norm_bwd(xs, ws, gs, op.dim, op.eps, want_dw))
                    })
                })
            })?;
            let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
            let dw = dw
                .map(|dw| Tensor::from_vec(dw, w.shape(), w.device()))
                .transpose()?;
            Ok((Some(dx), dw))
        }
        match x.dtype() {
            DType::F32 => run::<f32>(self, x, w, grad),
            DType::F64 => run::<f64>(self, x, w, grad),
            _ => Err(unsupported("fused RMSNorm backward")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

struct SwiGlu;

/// Elements per unit of work on the pool.
const BLOCK: usize = 4096;

fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (T::ZERO - x).exp())
}

fn swiglu_fwd<T: Float>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut out = vec![T::ZERO; gate.len()];
    let len = out.len();
    let blocks = Rows::new(&mut out, 1);
    for_rows(len.div_ceil(BLOCK), |range| {
        let span = range.start * BLOCK..(range.end * BLOCK).min(len);
        // SAFETY: `for_rows` hands out disjoint ranges.
        let out = unsafe { blocks.get(&span) };
        for ((o, &g), &u) in out.iter_mut().zip(&gate[span.clone()]).zip(&up[span]) {
            *o = g * sigmoid(g) * u;
        }
    });
    out
}

/// `d gate = d · u · s (1 + g (1 − s))`, `d up = d · g s`, with `s = sigmoid(g)`.
fn swiglu_bwd<T: Float>(gate: &[T], up: &[T], grad: &[T]) -> (Vec<T>, Vec<T>) {
    let len = gate.len();
    let (mut d_gate, mut d_up) = (vec![T::ZERO; len], vec![T::ZERO; len]);
    let (gate_rows, up_rows) = (Rows::new(&mut d_gate, 1), Rows::new(&mut d_up, 1));
    for_rows(len.div_ceil(BLOCK), |range| {
        let span = range.start * BLOCK..(range.end * BLOCK).min(len);
        // SAFETY: `for_rows` hands out disjoint ranges.
        let (dg, du) = unsafe { (gate_rows.get(&span), up_rows.get(&span)) };
        let (g, u, d) = (&gate[span.clone()], &up[span.clone()], &grad[span]);
        for i in 0..g.len() {
            let s = sigmoid(g[i]);
            let silu = g[i] * s;
            dg[i] = d[i] * u[i] * (s + silu * (T::ONE - s));
            du[i] = d[i] * silu;
        }
    });
    (d_gate, d_up)
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let storage = by_dtype2!("fused SwiGLU", gate, up, |g, u| swiglu_fwd(
            slice(g, gate_layout)?,
            slice(u, up_layout)?
        ));
        Ok((storage, gate_layout.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        fn run<T: Float>(
            gate: &Tensor,
            up: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
            let (dg, du) = with_slice::<T, _>(gate, |g| {
                with_slice::<T, _>(up, |u| {
                    with_slice::<T, _>(grad, |d| Ok(swiglu_bwd(g, u, d)))
                })
            })?;
            Ok((
                Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
                Some(Tensor::from_vec(du, up.shape(), up.device())?),
            ))
        }
        match gate.dtype() {
            DType::F32 => run::<f32>(gate, up, grad),
            DType::F64 => run::<f64>(gate, up, grad),
            _ => Err(unsupported("fused SwiGLU backward")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Log-probability of a target token

struct TargetLogSoftmax {
    vocab: usize,
    targets: Vec<u32>,
}

/// `log Σ exp(row)`, shifted by the row's max.
fn log_sum_exp<T: Float>(row: &[T]) -> T {
    let max = row.iter().fold(row[0], |m, &x| m.larger(x));
    max + sum_lanes(row, |x| (x - max).exp()).ln()
}

fn target_log_softmax_fwd<T: Float>(logits: &[T], targets: &[u32], vocab: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; targets.len()];
    let rows = Rows::new(&mut out, 1);
    for_rows(targets.len(), |range| {
        // SAFETY: `for_rows` hands out disjoint ranges.
        let out = unsafe { rows.get(&range) };
        for (o, n) in out.iter_mut().zip(range) {
            let row = &logits[n * vocab..(n + 1) * vocab];
            *o = row[targets[n] as usize] - log_sum_exp(row);
        }
    });
    out
}

/// `d logits[n, v] = g[n] · (1[v = target[n]] − softmax(logits[n])[v])`, the row's
/// log-normaliser coming from the forward output: `logits[n, target] − out[n]`.
fn target_log_softmax_bwd<T: Float>(
    logits: &[T],
    targets: &[u32],
    out: &[T],
    grad: &[T],
    vocab: usize,
) -> Vec<T> {
    let mut d = vec![T::ZERO; logits.len()];
    let rows = Rows::new(&mut d, vocab);
    for_rows(targets.len(), |range| {
        // SAFETY: `for_rows` hands out disjoint ranges.
        let d = unsafe { rows.get(&range) };
        for (d, n) in d.chunks_exact_mut(vocab).zip(range) {
            let row = &logits[n * vocab..(n + 1) * vocab];
            let t = targets[n] as usize;
            let (log_z, g) = (row[t] - out[n], grad[n]);
            for (d, &x) in d.iter_mut().zip(row) {
                *d = T::ZERO - g * (x - log_z).exp();
            }
            d[t] += g;
        }
    });
    d
}

impl CustomOp1 for TargetLogSoftmax {
    fn name(&self) -> &'static str {
        "fused-target-log-softmax"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let storage = match logits {
            CpuStorage::F32(_) => CpuStorage::F32(target_log_softmax_fwd(
                slice(logits.as_slice::<f32>()?, layout)?,
                &self.targets,
                self.vocab,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(target_log_softmax_fwd(
                slice(logits.as_slice::<f64>()?, layout)?,
                &self.targets,
                self.vocab,
            )),
            _ => return Err(unsupported("fused log-softmax")),
        };
        Ok((storage, Shape::from(self.targets.len())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        fn run<T: Float>(
            op: &TargetLogSoftmax,
            logits: &Tensor,
            out: &Tensor,
            grad: &Tensor,
        ) -> candle_core::Result<Option<Tensor>> {
            let grad = grad.to_dtype(logits.dtype())?;
            let d = with_slice::<T, _>(logits, |x| {
                with_slice::<T, _>(out, |o| {
                    with_slice::<T, _>(&grad, |g| {
                        Ok(target_log_softmax_bwd(x, &op.targets, o, g, op.vocab))
                    })
                })
            })?;
            Ok(Some(Tensor::from_vec(d, logits.shape(), logits.device())?))
        }
        match logits.dtype() {
            DType::F32 => run::<f32>(self, logits, out, grad),
            DType::F64 => run::<f64>(self, logits, out, grad),
            _ => Err(unsupported("fused log-softmax backward")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding into the head-major layout, and the head transpose

/// Rotary embedding of `x` `[batch, seq, heads, head_dim]` (a projection's output split into
/// heads) with `cos`/`sin` `[batch, 1, seq, head_dim]`, returned head-major and contiguous,
/// `[batch, heads, seq, head_dim]`: `x · cos + rotate_half(x) · sin` and the transpose in one
/// pass (fused kernel for f32/f64 CPU tensors; `transpose(1, 2)` and
/// [`crate::rope::Rope::apply`] otherwise).
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (batch, seq, heads, dim) = x.dims4()?;
    let fused = fusable(x)
        && dim % 2 == 0
        && cos.dtype() == x.dtype()
        && sin.dtype() == x.dtype()
        && cos.dims() == [batch, 1, seq, dim]
        && sin.dims() == [batch, 1, seq, dim];
    if !fused {
        return crate::rope::Rope::apply(&x.transpose(1, 2)?, cos, sin);
    }
    let op = RopeHeads {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        dims: [batch, seq, heads, dim],
    };
    Ok(x.contiguous()?
        .apply_op1_arc(std::sync::Arc::new(Box::new(op)))?)
}

/// `x` `[a, b, c, d]` as `[a, c, b, d]`, contiguous: one node instead of a transpose and a copy
/// (fused for f32/f64 CPU tensors).
pub fn swap_middle(x: &Tensor) -> Result<Tensor> {
    let (a, b, c, d) = x.dims4()?;
    if !fusable(x) {
        return Ok(x.transpose(1, 2)?.contiguous()?);
    }
    let op = SwapMiddle { dims: [a, b, c, d] };
    Ok(x.contiguous()?
        .apply_op1_arc(std::sync::Arc::new(Box::new(op)))?)
}

struct RopeHeads {
    cos: Tensor,
    sin: Tensor,
    /// `[batch, seq, heads, head_dim]` of the input.
    dims: [usize; 4],
}

/// Direction of the rotary map: the forward rotation, or its transpose for the backward pass.
#[derive(Clone, Copy, PartialEq)]
enum Rotate {
    Forward,
    Backward,
}

/// Output row `[b, h, s, :]` from input row `[b, s, h, :]` (forward), or the input-layout
/// gradient row `[b, s, h, :]` from the gradient row `[b, h, s, :]` (backward):
/// forward `y_j = x_j c_j − x_{j+m} s_j` (j < m), `y_j = x_j c_j + x_{j−m} s_j` (j ≥ m);
/// backward `dx_j = g_j c_j + g_{j+m} s_{j+m}` (j < m), `dx_j = g_j c_j − g_{j−m} s_{j−m}`.
fn rope_pass<T: Float>(
    src: &[T],
    cos: &[T],
    sin: &[T],
    dims: [usize; 4],
    direction: Rotate,
) -> Vec<T> {
    let [batch, seq, heads, dim] = dims;
    let m = dim / 2;
    let mut out = vec![T::ZERO; src.len()];
    let rows = Rows::new(&mut out, dim);
    // Work in destination rows; the destination is head-major forward, sequence-major backward.
    for_rows(batch * seq * heads, |range| {
        // SAFETY: `for_rows` hands out disjoint ranges.
        let out = unsafe { rows.get(&range) };
        for (o, r) in out.chunks_exact_mut(dim).zip(range) {
            let (b, s, h) = match direction {
                Rotate::Forward => (r / (heads * seq), r % seq, (r / seq) % heads),
                Rotate::Backward => (r / (seq * heads), (r / heads) % seq, r % heads),
            };
            let src_row = match direction {
                Rotate::Forward => ((b * seq + s) * heads + h) * dim,
                Rotate::Backward => ((b * heads + h) * seq + s) * dim,
            };
            let x = &src[src_row..src_row + dim];
            let table = (b * seq + s) * dim;
            let (c, sn) = (&cos[table..table + dim], &sin[table..table + dim]);
            let (x1, x2) = x.split_at(m);
            let (o1, o2) = o.split_at_mut(m);
            match direction {
                Rotate::Forward => {
                    for j in 0..m {
                        o1[j] = x1[j] * c[j] - x2[j] * sn[j];
                        o2[j] = x2[j] * c[m + j] + x1[j] * sn[m + j];
                    }
                }
                Rotate::Backward => {
                    for j in 0..m {
                        o1[j] = x1[j] * c[j] + x2[j] * sn[m + j];
                        o2[j] = x2[j] * c[m + j] - x1[j] * sn[j];
                    }
                }
            }
        }
    });
    out
}

impl RopeHeads {
    /// The pass over `src` (contiguous data of the source layout).
    fn pass<T: Float>(&self, src: &[T], direction: Rotate) -> candle_core::Result<Vec<T>> {
        with_slice::<T, _>(&self.cos, |c| {
            with_slice::<T, _>(&self.sin, |s| {
                Ok(rope_pass(src, c, s, self.dims, direction))
            })
        })
    }
}

impl CustomOp1 for RopeHeads {
    fn name(&self) -> &'static str {
        "fused-rope-heads"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let [batch, seq, heads, dim] = self.dims;
        let storage = match x {
            CpuStorage::F32(v) => CpuStorage::F32(self.pass(slice(v, layout)?, Rotate::Forward)?),
            CpuStorage::F64(v) => CpuStorage::F64(self.pass(slice(v, layout)?, Rotate::Forward)?),
            _ => return Err(unsupported("fused rotary embedding")),
        };
        Ok((storage, Shape::from((batch, heads, seq, dim))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let [batch, seq, heads, dim] = self.dims;
        let shape = Shape::from((batch, seq, heads, dim));
        let dx = match grad.dtype() {
            DType::F32 => {
                let d = with_slice::<f32, _>(grad, |g| self.pass(g, Rotate::Backward))?;
                Tensor::from_vec(d, shape, grad.device())?
            }
            DType::F64 => {
                let d = with_slice::<f64, _>(grad, |g| self.pass(g, Rotate::Backward))?;
                Tensor::from_vec(d, shape, grad.device())?
            }
            _ => return Err(unsupported("fused rotary embedding backward")),
        };
        Ok(Some(dx))
    }
}

struct SwapMiddle {
    dims: [usize; 4],
}

/// `[a, b, c, d]` → `[a, c, b, d]`, contiguous.
fn swap_pass<T: Copy + Send + Sync + Default>(src: &[T], dims: [usize; 4]) -> Vec<T> {
    let [a, b, c, d] = dims;
    let mut out = vec![T::default(); src.len()];
    let rows = Rows::new(&mut out, d);
    for_rows(a * c * b, |range| {
        // SAFETY: `for_rows` hands out disjoint ranges.
        let out = unsafe { rows.get(&range) };
        for (o, r) in out.chunks_exact_mut(d).zip(range) {
            // Destination row (i, k, j) of [a, c, b]; source row (i, j, k) of [a, b, c].
            let (i, k, j) = (r / (c * b), (r / b) % c, r % b);
            let src_row = ((i * b + j) * c + k) * d;
            o.copy_from_slice(&src[src_row..src_row + d]);
        }
    });
    out
}

impl CustomOp1 for SwapMiddle {
    fn name(&self) -> &'static str {
        "fused-swap-middle"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let [a, b, c, d] = self.dims;
        let storage = match x {
            CpuStorage::F32(v) => CpuStorage::F32(swap_pass(slice(v, layout)?, self.dims)),
            CpuStorage::F64(v) => CpuStorage::F64(swap_pass(slice(v, layout)?, self.dims)),
            _ => return Err(unsupported("fused head transpose")),
        };
        Ok((storage, Shape::from((a, c, b, d))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let [a, b, c, d] = self.dims;
        let dims = [a, c, b, d];
        let shape = Shape::from((a, b, c, d));
        let dx = match grad.dtype() {
            DType::F32 => Tensor::from_vec(
                with_slice::<f32, _>(grad, |g| Ok(swap_pass(g, dims)))?,
                shape,
                grad.device(),
            )?,
            DType::F64 => Tensor::from_vec(
                with_slice::<f64, _>(grad, |g| Ok(swap_pass(g, dims)))?,
                shape,
                grad.device(),
            )?,
            _ => return Err(unsupported("fused head transpose backward")),
        };
        Ok(Some(dx))
    }
}

// ---------------------------------------------------------------------------------------------
// Attention probabilities and their softmax backward (inside the chunked attention op, which
// keeps its own graph: no autograd here)

/// `softmax(scores · scale + mask)` over the last dimension for `scores` `[batch, heads, len,
/// keys]` and an additive `mask` `[batch, 1, seq, keys]` whose rows `start..start + len` apply:
/// one pass per row on the CPU (f32/f64, scores in the mask's dtype), candle's ops otherwise.
pub fn attention_probs(scores: &Tensor, mask: &Tensor, start: usize, scale: f64) -> Result<Tensor> {
    let (batch, heads, len, keys) = scores.dims4()?;
    let (mask_batch, _, mask_seq, mask_keys) = mask.dims4()?;
    let fused = fusable(scores)
        && scores.dtype() == mask.dtype()
        && mask_batch == batch
        && mask_keys == keys
        && start + len <= mask_seq;
    if !fused {
        let scores = (scores * scale)?
            .to_dtype(mask.dtype())?
            .broadcast_add(&mask.narrow(2, start, len)?)?;
        return crate::layers::softmax_last_dim(&scores);
    }
    fn run<T: Float>(
        scores: &[T],
        mask: &[T],
        dims: [usize; 4],
        mask_seq: usize,
        start: usize,
        scale: f64,
    ) -> Vec<T> {
        let [_, heads, len, keys] = dims;
        let scale = T::of_f64(scale);
        let mut out = vec![T::ZERO; scores.len()];
        let rows = Rows::new(&mut out, keys);
        for_rows(scores.len() / keys, |range| {
            // SAFETY: `for_rows` hands out disjoint ranges.
            let out = unsafe { rows.get(&range) };
            for (o, r) in out.chunks_exact_mut(keys).zip(range) {
                let (b, i) = (r / (heads * len), r % len);
                let m = &mask[(b * mask_seq + start + i) * keys..][..keys];
                let x = &scores[r * keys..(r + 1) * keys];
                let mut max = T::ZERO - T::of_f64(f64::INFINITY);
                for ((o, &x), &m) in o.iter_mut().zip(x).zip(m) {
                    *o = x * scale + m;
                    max = max.larger(*o);
                }
                for o in o.iter_mut() {
                    *o = (*o - max).exp();
                }
                let inv = T::ONE / sum_lanes(o, |v| v);
                for o in o.iter_mut() {
                    *o *= inv;
                }
            }
        });
        out
    }
    let dims = [batch, heads, len, keys];
    let probs = match scores.dtype() {
        DType::F32 => with_slice::<f32, _>(scores, |s| {
            with_slice::<f32, _>(mask, |m| {
                let v = run(s, m, dims, mask_seq, start, scale);
                Tensor::from_vec(v, scores.shape(), scores.device())
            })
        })?,
        _ => with_slice::<f64, _>(scores, |s| {
            with_slice::<f64, _>(mask, |m| {
                let v = run(s, m, dims, mask_seq, start, scale);
                Tensor::from_vec(v, scores.shape(), scores.device())
            })
        })?,
    };
    Ok(probs)
}

/// The scores' gradient from the probabilities `P` and their gradient `dP` (same shape, rows
/// over the last dimension), times `scale`: `scale · P ∘ (dP − Σ_row P ∘ dP)`. One pass per
/// row on the CPU (f32/f64), candle's ops otherwise.
pub fn softmax_backward(probs: &Tensor, d_probs: &Tensor, scale: f64) -> Result<Tensor> {
    if !fusable(probs) || probs.dtype() != d_probs.dtype() || probs.dims() != d_probs.dims() {
        let row_dot = (probs * d_probs)?.sum_keepdim(D::Minus1)?;
        return Ok(((probs * d_probs.broadcast_sub(&row_dot)?)? * scale)?);
    }
    fn run<T: Float>(p: &[T], dp: &[T], keys: usize, scale: f64) -> Vec<T> {
        let scale = T::of_f64(scale);
        let mut out = vec![T::ZERO; p.len()];
        let rows = Rows::new(&mut out, keys);
        for_rows(p.len() / keys, |range| {
            // SAFETY: `for_rows` hands out disjoint ranges.
            let out = unsafe { rows.get(&range) };
            let span = range.start * keys..range.end * keys;
            let (p, dp) = (&p[span.clone()], &dp[span]);
            for ((o, p), dp) in out
                .chunks_exact_mut(keys)
                .zip(p.chunks_exact(keys))
                .zip(dp.chunks_exact(keys))
            {
                let dot = sum_lanes2(p, dp, |a, b| a * b);
                for ((o, &p), &dp) in o.iter_mut().zip(p).zip(dp) {
                    *o = scale * p * (dp - dot);
                }
            }
        });
        out
    }
    let keys = probs.dim(D::Minus1)?;
    let out = match probs.dtype() {
        DType::F32 => with_slice::<f32, _>(probs, |p| {
            with_slice::<f32, _>(d_probs, |d| {
                Tensor::from_vec(run(p, d, keys, scale), probs.shape(), probs.device())
            })
        })?,
        _ => with_slice::<f64, _>(probs, |p| {
            with_slice::<f64, _>(d_probs, |d| {
                Tensor::from_vec(run(p, d, keys, scale), probs.shape(), probs.device())
            })
        })?,
    };
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Helpers for other crates' CPU kernels (the optimiser)

/// Elements per unit of work in [`for_each_block_mut`] and [`sum_of_squares`].
pub const PAR_BLOCK: usize = 1 << 14;

/// Runs `f(offset, block)` over consecutive blocks of [`PAR_BLOCK`] elements of `data` (the last
/// one may be shorter) on candle's CPU pool; `offset` is the block's first index.
pub fn for_each_block_mut<T: Send>(data: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let len = data.len();
    let blocks = Rows::new(data, PAR_BLOCK);
    for_rows(len.div_ceil(PAR_BLOCK), |range| {
        let offset = range.start * PAR_BLOCK;
        // SAFETY: `for_rows` hands out disjoint ranges.
        f(offset, unsafe { blocks.get_clamped(&range, len) });
    });
}

/// `Σ x²` of a tensor in f64: one pass on the CPU for f32/f64 (partial sums per block, added in
/// block order, so the result does not depend on the thread count), candle's ops otherwise.
pub fn sum_of_squares(t: &Tensor) -> Result<f64> {
    fn run<T: Float>(xs: &[T], to_f64: impl Fn(T) -> f64 + Sync) -> f64 {
        let mut partials = vec![0f64; xs.len().div_ceil(PAR_BLOCK)];
        let slots = Rows::new(&mut partials, 1);
        for_rows(xs.len().div_ceil(PAR_BLOCK), |range| {
            // SAFETY: `for_rows` hands out disjoint ranges.
            let slots = unsafe { slots.get(&range) };
            for (slot, block) in slots.iter_mut().zip(range) {
                let part = &xs[block * PAR_BLOCK..((block + 1) * PAR_BLOCK).min(xs.len())];
                let mut acc = [0f64; LANES];
                let mut chunks = part.chunks_exact(LANES);
                for chunk in &mut chunks {
                    for (a, &x) in acc.iter_mut().zip(chunk) {
                        let x = to_f64(x);
                        *a += x * x;
                    }
                }
                let tail: f64 = chunks
                    .remainder()
                    .iter()
                    .map(|&x| to_f64(x) * to_f64(x))
                    .sum();
                *slot = acc.iter().sum::<f64>() + tail;
            }
        });
        partials.iter().sum()
    }
    if !fusable(t) {
        return Ok(t
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?);
    }
    let total = match t.dtype() {
        DType::F32 => with_slice::<f32, _>(t, |xs| Ok(run(xs, |x| x as f64)))?,
        _ => with_slice::<f64, _>(t, |xs| Ok(run(xs, |x| x)))?,
    };
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// A fixed, irregular fill in [-scale, scale) (no RNG crate needed).
    fn seeded(dims: &[usize], seed: u64, scale: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|i| {
                let v = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed);
                ((v >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(values, dims, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// `Σ out · head` and its gradients with respect to `vars`.
    fn grads_of(out: &Tensor, head: &Tensor, vars: &[&Var]) -> (f64, Vec<Option<Tensor>>) {
        let loss = (out * head.to_dtype(out.dtype()).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let value = loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let per_var = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect();
        (value, per_var)
    }

    #[test]
    fn exp_f32_is_within_two_ulp_of_the_library_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let ours = exp_f32(x) as f64;
            let exact = (x as f64).exp();
            worst = worst.max(((ours - exact) / exact).abs());
            x += 0.001_37;
        }
        // f32's epsilon is 1.19e-7; two ulp of relative error at most.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        // Clamped, never infinite, never zero.
        assert!(exp_f32(1e9).is_finite() && exp_f32(1e9) > 1e38);
        assert!(exp_f32(-1e9) > 0.0 && exp_f32(-1e9) < 2e-38);
    }

    /// RMSNorm: value and the gradients of x and w equal candle's ops' autograd, in f64 and f32,
    /// for a contiguous and a transposed (non-contiguous) input; 39 rows make three blocks of
    /// the backward pass, the last one short.
    #[test]
    fn rms_norm_equals_the_unfused_ops() {
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            for transposed in [false, true] {
                let base = seeded(&[3, 37, 13], 1, 2.0).to_dtype(dtype).unwrap();
                let x_var = Var::from_tensor(&base).unwrap();
                let w_var =
                    Var::from_tensor(&seeded(&[37], 2, 1.5).to_dtype(dtype).unwrap()).unwrap();
                let x_in = if transposed {
                    x_var.as_tensor().transpose(1, 2).unwrap()
                } else {
                    x_var.as_tensor().reshape((3, 13, 37)).unwrap()
                };
                let head = seeded(&[3, 13, 37], 3, 1.0);
                let fused = rms_norm(&x_in, w_var.as_tensor(), 1e-6).unwrap();
                let plain = rms_norm_unfused(&x_in, w_var.as_tensor(), 1e-6).unwrap();
                assert!(max_diff(&fused, &plain) < tolerance, "{dtype:?} value");
                let (_, g_fused) = grads_of(&fused, &head, &[&x_var, &w_var]);
                let (_, g_plain) = grads_of(&plain, &head, &[&x_var, &w_var]);
                for (name, a, b) in [
                    ("x", &g_fused[0], &g_plain[0]),
                    ("w", &g_fused[1], &g_plain[1]),
                ] {
                    let d = max_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
                    assert!(
                        d < tolerance,
                        "{dtype:?} transposed={transposed} d{name}: {d:e}"
                    );
                }
            }
        }
    }

    /// Central differences of `Σ f(x) · head` in f64, against the fused backward.
    fn check_finite_differences(
        base: &Tensor,
        head: &Tensor,
        f: impl Fn(&Tensor) -> Tensor,
        tolerance: f64,
    ) {
        let var = Var::from_tensor(base).unwrap();
        let (_, grads) = grads_of(&f(var.as_tensor()), head, &[&var]);
        let analytic = grads[0].as_ref().unwrap().flatten_all().unwrap();
        let analytic = analytic.to_vec1::<f64>().unwrap();
        let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-6;
        let loss = |values: &[f64]| {
            let t = Tensor::from_slice(values, base.dims(), &Device::Cpu).unwrap();
            (f(&t) * head)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for i in 0..flat.len() {
            let (mut plus, mut minus) = (flat.clone(), flat.clone());
            plus[i] += eps;
            minus[i] -= eps;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < tolerance,
                "element {i}: numeric {numeric} analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn rms_norm_gradients_match_finite_differences() {
        let w = seeded(&[6], 5, 1.0);
        let x = seeded(&[4, 6], 6, 3.0);
        let head = seeded(&[4, 6], 7, 1.0);
        check_finite_differences(&x, &head, |x| rms_norm(x, &w, 1e-5).unwrap(), 1e-8);
        // The weight's gradient, with x fixed.
        check_finite_differences(&w, &head, |w| rms_norm(&x, w, 1e-5).unwrap(), 1e-8);
    }

    /// By hand: the row (3, 4) has mean square 12.5, so with eps 0 it normalises to
    /// (3, 4) / √12.5 = (0.8485…, 1.1314…), scaled by w = (2, −1).
    #[test]
    fn rms_norm_hand_computed_row() {
        let x = Tensor::new(&[[3.0f64, 4.0]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[2.0f64, -1.0], &Device::Cpu).unwrap();
        let out = rms_norm(&x, &w, 0.0).unwrap().to_vec2::<f64>().unwrap();
        let r = 1.0 / 12.5f64.sqrt();
        assert!((out[0][0] - 6.0 * r).abs() < 1e-15);
        assert!((out[0][1] + 4.0 * r).abs() < 1e-15);
    }

    /// A plain (untrained) weight, as LoRA's frozen norms are, gets no gradient entry.
    #[test]
    fn rms_norm_leaves_a_plain_weight_without_gradient() {
        let x = Var::from_tensor(&seeded(&[2, 8], 8, 1.0)).unwrap();
        let w = seeded(&[8], 9, 1.0);
        let out = rms_norm(x.as_tensor(), &w, 1e-6).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn swiglu_equals_the_unfused_ops() {
        for (dtype, tolerance) in [(DType::F64, 1e-13), (DType::F32, 1e-5)] {
            // Large enough for several blocks on the pool, and values past silu's bend.
            let dims = [3, 2 * BLOCK + 17];
            let gate = Var::from_tensor(&seeded(&dims, 10, 9.0).to_dtype(dtype).unwrap()).unwrap();
            let up = Var::from_tensor(&seeded(&dims, 11, 2.0).to_dtype(dtype).unwrap()).unwrap();
            let head = seeded(&dims, 12, 1.0);
            let fused = swiglu(gate.as_tensor(), up.as_tensor()).unwrap();
            let plain = swiglu_unfused(gate.as_tensor(), up.as_tensor()).unwrap();
            assert!(
                max_diff(&fused, &plain) < tolerance * 10.0,
                "{dtype:?} value"
            );
            let (_, g_fused) = grads_of(&fused, &head, &[&gate, &up]);
            let (_, g_plain) = grads_of(&plain, &head, &[&gate, &up]);
            for (name, a, b) in [
                ("gate", &g_fused[0], &g_plain[0]),
                ("up", &g_fused[1], &g_plain[1]),
            ] {
                let d = max_diff(a.as_ref().unwrap(), b.as_ref().unwrap());
                assert!(d < tolerance * 10.0, "{dtype:?} d{name}: {d:e}");
            }
        }
    }

    #[test]
    fn swiglu_gradients_match_finite_differences() {
        let gate = seeded(&[3, 7], 13, 4.0);
        let up = seeded(&[3, 7], 14, 2.0);
        let head = seeded(&[3, 7], 15, 1.0);
        check_finite_differences(&gate, &head, |g| swiglu(g, &up).unwrap(), 1e-8);
        check_finite_differences(&up, &head, |u| swiglu(&gate, u).unwrap(), 1e-8);
    }

    /// By hand: silu(0) = 0 and silu'(0) = 1/2, so at gate 0 the output is 0, d gate = d · u / 2
    /// and d up = 0.
    #[test]
    fn swiglu_hand_computed_point() {
        let gate = Var::from_tensor(&Tensor::new(&[0.0f64], &Device::Cpu).unwrap()).unwrap();
        let up = Var::from_tensor(&Tensor::new(&[3.0f64], &Device::Cpu).unwrap()).unwrap();
        let out = swiglu(gate.as_tensor(), up.as_tensor()).unwrap();
        assert_eq!(out.to_vec1::<f64>().unwrap(), [0.0]);
        let grads = out.sum_all().unwrap().backward().unwrap();
        let dg = grads
            .get(gate.as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let du = grads.get(up.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        assert!((dg[0] - 1.5).abs() < 1e-15 && du[0].abs() < 1e-15);
    }

    #[test]
    fn target_log_softmax_equals_the_unfused_ops() {
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let x = Var::from_tensor(&seeded(&[6, 37], 16, 6.0).to_dtype(dtype).unwrap()).unwrap();
            let targets = Tensor::new(&[0u32, 36, 5, 5, 17, 30], &Device::Cpu).unwrap();
            let head = Tensor::new(&[1.0, -2.0, 0.5, 3.0, 0.0, -1.5], &Device::Cpu).unwrap();
            let fused = target_log_softmax(x.as_tensor(), &targets).unwrap();
            let plain = target_log_softmax_unfused(x.as_tensor(), &targets).unwrap();
            assert!(max_diff(&fused, &plain) < tolerance, "{dtype:?} value");
            let (_, g_fused) = grads_of(&fused, &head, &[&x]);
            let (_, g_plain) = grads_of(&plain, &head, &[&x]);
            let d = max_diff(g_fused[0].as_ref().unwrap(), g_plain[0].as_ref().unwrap());
            assert!(d < tolerance, "{dtype:?} gradient: {d:e}");
        }
    }

    /// By hand: logits (0, ln 3) put probability 1/4 and 3/4 on the two tokens, and
    /// d/dx log softmax(x)[1] = onehot(1) − softmax(x) = (−1/4, 1/4).
    #[test]
    fn target_log_softmax_hand_computed_row() {
        let x =
            Var::from_tensor(&Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap()).unwrap();
        let targets = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let out = target_log_softmax(x.as_tensor(), &targets).unwrap();
        assert!((out.to_vec1::<f64>().unwrap()[0] - 0.75f64.ln()).abs() < 1e-15);
        let grads = out.sum_all().unwrap().backward().unwrap();
        let d = grads.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        assert!((d[0][0] + 0.25).abs() < 1e-15 && (d[0][1] - 0.25).abs() < 1e-15);
    }

    #[test]
    fn target_log_softmax_gradient_matches_finite_differences() {
        let x = seeded(&[3, 11], 17, 5.0);
        let targets = Tensor::new(&[2u32, 10, 0], &Device::Cpu).unwrap();
        let head = Tensor::new(&[0.7f64, -1.3, 2.0], &Device::Cpu).unwrap();
        check_finite_differences(
            &x,
            &head,
            |x| target_log_softmax(x, &targets).unwrap(),
            1e-8,
        );
    }

    #[test]
    fn target_log_softmax_rejects_targets_outside_the_vocabulary() {
        let x = seeded(&[2, 5], 18, 1.0).to_dtype(DType::F32).unwrap();
        let targets = Tensor::new(&[1u32, 5], &Device::Cpu).unwrap();
        let error = target_log_softmax(&x, &targets).unwrap_err().to_string();
        assert!(error.contains("outside the vocabulary"), "{error}");
    }

    /// Cos/sin tables `[batch, 1, seq, dim]` from real rotary frequencies at uneven positions.
    fn rope_tables(batch: usize, seq: usize, dim: usize, dtype: DType) -> (Tensor, Tensor) {
        let rope = crate::rope::Rope::new(dim, 10_000.0, None).unwrap();
        let positions: Vec<Vec<u32>> = (0..batch)
            .map(|b| (0..seq as u32).map(|s| 3 * s + b as u32).collect())
            .collect();
        let positions = crate::rope::positions_tensor(&positions, &Device::Cpu).unwrap();
        rope.cos_sin(&positions, dtype).unwrap()
    }

    /// The fused rotation + transpose against `transpose(1, 2)` and `Rope::apply` with
    /// candle's autograd, in f64 and f32.
    #[test]
    fn rope_heads_equals_the_unfused_ops() {
        let (batch, seq, heads, dim) = (2, 5, 3, 8);
        for (dtype, tolerance) in [(DType::F64, 1e-13), (DType::F32, 1e-5)] {
            let (cos, sin) = rope_tables(batch, seq, dim, dtype);
            let x = Var::from_tensor(
                &seeded(&[batch, seq, heads, dim], 21, 2.0)
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let head = seeded(&[batch, heads, seq, dim], 22, 1.0);
            let fused = rope_heads(x.as_tensor(), &cos, &sin).unwrap();
            assert_eq!(fused.dims(), [batch, heads, seq, dim]);
            assert!(fused.is_contiguous());
            let plain =
                crate::rope::Rope::apply(&x.as_tensor().transpose(1, 2).unwrap(), &cos, &sin)
                    .unwrap();
            assert!(max_diff(&fused, &plain) < tolerance, "{dtype:?} value");
            let (_, g_fused) = grads_of(&fused, &head, &[&x]);
            let (_, g_plain) = grads_of(&plain, &head, &[&x]);
            let d = max_diff(g_fused[0].as_ref().unwrap(), g_plain[0].as_ref().unwrap());
            assert!(d < tolerance, "{dtype:?} gradient: {d:e}");
        }
    }

    #[test]
    fn rope_heads_gradient_matches_finite_differences() {
        let (cos, sin) = rope_tables(1, 3, 4, DType::F64);
        let x = seeded(&[1, 3, 2, 4], 23, 1.5);
        let head = seeded(&[1, 2, 3, 4], 24, 1.0);
        check_finite_differences(&x, &head, |x| rope_heads(x, &cos, &sin).unwrap(), 1e-8);
    }

    /// By hand: at position p with one frequency pair (dim 2, θ = 1 · p), the pair (a, b)
    /// rotates to (a cos p − b sin p, b cos p + a sin p).
    #[test]
    fn rope_heads_hand_computed_rotation() {
        let rope = crate::rope::Rope::new(2, 10_000.0, None).unwrap();
        let positions = crate::rope::positions_tensor(&[vec![0, 2]], &Device::Cpu).unwrap();
        let (cos, sin) = rope.cos_sin(&positions, DType::F64).unwrap();
        let x = Tensor::new(&[[[[1.0f64, 2.0]], [[3.0, -1.0]]]], &Device::Cpu).unwrap();
        let out = rope_heads(&x, &cos, &sin).unwrap();
        let out = out.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // Position 0 leaves (1, 2) unchanged; position 2 (frequency 1) rotates (3, −1) by 2 rad.
        let (c, s) = ((2.0f32 as f64).cos(), (2.0f32 as f64).sin());
        let expected = [1.0, 2.0, 3.0 * c + s, -c + 3.0 * s];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
    }

    #[test]
    fn swap_middle_equals_transpose_and_routes_gradients_back() {
        for dtype in [DType::F64, DType::F32] {
            let x =
                Var::from_tensor(&seeded(&[2, 3, 4, 5], 25, 1.0).to_dtype(dtype).unwrap()).unwrap();
            let head = seeded(&[2, 4, 3, 5], 26, 1.0);
            let fused = swap_middle(x.as_tensor()).unwrap();
            let plain = x.as_tensor().transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(max_diff(&fused, &plain), 0.0);
            let (_, g_fused) = grads_of(&fused, &head, &[&x]);
            let (_, g_plain) = grads_of(&plain, &head, &[&x]);
            let d = max_diff(g_fused[0].as_ref().unwrap(), g_plain[0].as_ref().unwrap());
            assert_eq!(d, 0.0, "{dtype:?}");
        }
    }

    /// A `[batch, 1, seq, keys]` mask hiding a different set of keys per row.
    fn uneven_mask(batch: usize, seq: usize, keys: usize) -> Tensor {
        let data: Vec<f64> = (0..batch * seq * keys)
            .map(|i| {
                if (i * 7 + i / keys).is_multiple_of(5) {
                    crate::layers::MASKED_SCORE
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_vec(data, (batch, 1, seq, keys), &Device::Cpu).unwrap()
    }

    /// Scaled, masked softmax over rows `start..start + len` of the mask, against candle's ops.
    #[test]
    fn attention_probs_equal_the_unfused_ops() {
        let (batch, heads, seq, keys, start, len) = (2, 3, 7, 9, 2, 4);
        for (dtype, tolerance) in [(DType::F64, 1e-14), (DType::F32, 1e-6)] {
            let scores = seeded(&[batch, heads, len, keys], 27, 8.0)
                .to_dtype(dtype)
                .unwrap();
            let mask = uneven_mask(batch, seq, keys).to_dtype(dtype).unwrap();
            let fused = attention_probs(&scores, &mask, start, 0.3).unwrap();
            let plain = crate::layers::softmax_last_dim(
                &(&scores * 0.3)
                    .unwrap()
                    .broadcast_add(&mask.narrow(2, start, len).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert!(max_diff(&fused, &plain) < tolerance, "{dtype:?}");
            // Rows sum to one.
            let sums = fused.sum(D::Minus1).unwrap().flatten_all().unwrap();
            let ones = Tensor::ones(sums.dims(), dtype, &Device::Cpu).unwrap();
            assert!(max_diff(&sums, &ones) < tolerance * 10.0);
        }
    }

    /// The fused softmax backward against candle's autograd through softmax, times the scale.
    #[test]
    fn softmax_backward_equals_autograd() {
        for (dtype, tolerance) in [(DType::F64, 1e-14), (DType::F32, 1e-6)] {
            let scores =
                Var::from_tensor(&seeded(&[2, 3, 11], 28, 3.0).to_dtype(dtype).unwrap()).unwrap();
            let head = seeded(&[2, 3, 11], 29, 1.0).to_dtype(dtype).unwrap();
            let scaled = (scores.as_tensor() * 0.7).unwrap();
            let probs = crate::layers::softmax_last_dim(&scaled).unwrap();
            let grads = (&probs * &head)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let expected = grads.get(scores.as_tensor()).unwrap();
            let ours = softmax_backward(&probs.detach(), &head, 0.7).unwrap();
            assert!(max_diff(&ours, expected) < tolerance, "{dtype:?}");
        }
    }

    /// A dtype without a fused kernel (bf16) takes candle's ops and gives their result.
    #[test]
    fn other_dtypes_fall_back_to_candle_ops() {
        let x = seeded(&[4, 16], 19, 2.0).to_dtype(DType::BF16).unwrap();
        let w = seeded(&[16], 20, 1.0).to_dtype(DType::BF16).unwrap();
        let fused = rms_norm(&x, &w, 1e-6).unwrap();
        assert_eq!(fused.dtype(), DType::BF16);
        let plain = rms_norm_unfused(&x, &w, 1e-6).unwrap();
        assert_eq!(max_diff(&fused, &plain), 0.0);
        let g = swiglu(&x, &x).unwrap();
        assert_eq!(max_diff(&g, &swiglu_unfused(&x, &x).unwrap()), 0.0);
    }
}
