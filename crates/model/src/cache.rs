//! The key/value cache of a batch of sequences, left-padded to a common length.
//!
//! Keys and values of every layer live in preallocated `[batch, kv_heads, capacity, head_dim]`
//! buffers written in place (`slice_set`); attention reads a narrowed view, which candle's CPU
//! matmul consumes without a copy. Rows can be dropped (finished sequences) and caches merged
//! (newly admitted sequences), which is what continuous batching needs.
//!
//! The cache is for inference only: stored keys and values are detached, so no gradient ever
//! flows through it.

use candle_core::Tensor;

use crate::{Error, Result};

/// Capacity grows in steps of this many positions.
const CAPACITY_STEP: usize = 64;

#[derive(Debug, Clone)]
struct LayerKv {
    keys: Tensor,
    values: Tensor,
}

/// Cached keys and values of all layers, with which columns of each row hold real tokens.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// Columns in use (the same for every row; shorter rows are padded on the left).
    len: usize,
    /// `mask[row][column]`: whether that column holds a real token.
    mask: Vec<Vec<bool>>,
    /// Real tokens per row: the position id of that row's next token.
    n_real: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `batch` rows of a model with `n_layers` layers.
    pub fn new(n_layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            len: 0,
            mask: vec![Vec::new(); batch],
            n_real: vec![0; batch],
        }
    }

    pub fn batch_size(&self) -> usize {
        self.mask.len()
    }

    /// Columns in use.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Real (non-pad) tokens cached for each row.
    pub fn n_real(&self) -> &[usize] {
        &self.n_real
    }

    pub(crate) fn mask(&self) -> &[Vec<bool>] {
        &self.mask
    }

    /// Writes the new keys/values `[batch, kv_heads, seq, head_dim]` of `layer` after the cached
    /// columns and returns views of all columns so far.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: &Tensor,
        values: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n_layers = self.layers.len();
        let slot = self.layers.get_mut(layer).ok_or_else(|| {
            Error::Input(format!(
                "cache has {n_layers} layers, layer {layer} requested"
            ))
        })?;
        let (batch, kv_heads, seq, head_dim) = keys.dims4()?;
        let needed = self.len + seq;
        let keys = keys.detach().contiguous()?;
        let values = values.detach().contiguous()?;
        let grow = match slot {
            Some(kv) => kv.keys.dim(2)? < needed,
            None => true,
        };
        if grow {
            let capacity = needed.div_ceil(CAPACITY_STEP).max(1) * CAPACITY_STEP * 2;
            let shape = (batch, kv_heads, capacity, head_dim);
            let new_keys = Tensor::zeros(shape, keys.dtype(), keys.device())?;
            let new_values = Tensor::zeros(shape, values.dtype(), values.device())?;
            if let Some(old) = slot.as_ref() {
                if self.len > 0 {
                    new_keys.slice_set(&old.keys.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    new_values.slice_set(
                        &old.values.narrow(2, 0, self.len)?.contiguous()?,
                        2,
                        0,
                    )?;
                }
            }
            *slot = Some(LayerKv {
                keys: new_keys,
                values: new_values,
            });
        }
        let kv = slot
            .as_ref()
            .ok_or_else(|| Error::Input("cache layer missing after growth".into()))?;
        kv.keys.slice_set(&keys, 2, self.len)?;
        kv.values.slice_set(&values, 2, self.len)?;
        Ok((
            kv.keys.narrow(2, 0, needed)?,
            kv.values.narrow(2, 0, needed)?,
        ))
    }

    /// Records that the forward pass appended `new_mask` columns to every layer.
    pub(crate) fn advance(&mut self, new_mask: &[Vec<bool>]) {
        let added = new_mask.first().map_or(0, Vec::len);
        for ((row, n_real), new) in self.mask.iter_mut().zip(&mut self.n_real).zip(new_mask) {
            row.extend_from_slice(new);
            *n_real += new.iter().filter(|&&m| m).count();
        }
        self.len += added;
    }

    /// Keeps only `rows` (in that order; a row may repeat), then drops leading columns that are
    /// padding in every remaining row.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let batch = self.batch_size();
        if let Some(&bad) = rows.iter().find(|&&r| r >= batch) {
            return Err(Error::Input(format!(
                "cache has {batch} rows, row {bad} selected"
            )));
        }
        let mask: Vec<Vec<bool>> = rows.iter().map(|&r| self.mask[r].clone()).collect();
        let n_real: Vec<usize> = rows.iter().map(|&r| self.n_real[r]).collect();
        let start = mask
            .iter()
            .map(|row| row.iter().position(|&m| m).unwrap_or(row.len()))
            .min()
            .unwrap_or(self.len);
        let new_len = self.len - start;
        for slot in &mut self.layers {
            if let Some(kv) = slot.as_mut() {
                let device = kv.keys.device().clone();
                let index = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    &device,
                )?;
                kv.keys = rebuffer(&kv.keys.index_select(&index, 0)?, start, new_len)?;
                kv.values = rebuffer(&kv.values.index_select(&index, 0)?, start, new_len)?;
            }
        }
        self.mask = mask.into_iter().map(|row| row[start..].to_vec()).collect();
        self.n_real = n_real;
        self.len = new_len;
        Ok(())
    }

    /// Appends the rows of `other` after this cache's rows, left-padding the shorter one.
    pub fn merge(&mut self, other: KvCache) -> Result<()> {
        if self.layers.len() != other.layers.len() {
            return Err(Error::Input(format!(
                "cannot merge caches of {} and {} layers",
                self.layers.len(),
                other.layers.len()
            )));
        }
        if other.batch_size() == 0 {
            return Ok(());
        }
        if self.batch_size() == 0 {
            *self = other;
            return Ok(());
        }
        let len = self.len.max(other.len);
        let mut layers = Vec::with_capacity(self.layers.len());
        for (mine, theirs) in self.layers.iter().zip(&other.layers) {
            match (mine, theirs) {
                (Some(a), Some(b)) => {
                    let keys = Tensor::cat(
                        &[
                            &left_pad(&a.keys, self.len, len)?,
                            &left_pad(&b.keys, other.len, len)?,
                        ],
                        0,
                    )?;
                    let values = Tensor::cat(
                        &[
                            &left_pad(&a.values, self.len, len)?,
                            &left_pad(&b.values, other.len, len)?,
                        ],
                        0,
                    )?;
                    layers.push(Some(LayerKv {
                        keys: rebuffer(&keys, 0, len)?,
                        values: rebuffer(&values, 0, len)?,
                    }));
                }
                _ => {
                    return Err(Error::Input(
                        "cannot merge a cache that has not seen a forward pass".into(),
                    ))
                }
            }
        }
        let pad = |row: &Vec<bool>, have: usize| {
            let mut padded = vec![false; len - have];
            padded.extend_from_slice(row);
            padded
        };
        let mut mask: Vec<Vec<bool>> = self.mask.iter().map(|r| pad(r, self.len)).collect();
        mask.extend(other.mask.iter().map(|r| pad(r, other.len)));
        self.n_real.extend_from_slice(&other.n_real);
        self.mask = mask;
        self.layers = layers;
        self.len = len;
        Ok(())
    }
}

/// The columns `start..start + len` of `t` (`[b, h, capacity, d]`) copied into a fresh buffer with
/// room to grow.
fn rebuffer(t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let (batch, heads, _, head_dim) = t.dims4()?;
    let capacity = (len + 1).div_ceil(CAPACITY_STEP) * CAPACITY_STEP * 2;
    let buffer = Tensor::zeros((batch, heads, capacity, head_dim), t.dtype(), t.device())?;
    if len > 0 {
        buffer.slice_set(&t.narrow(2, start, len)?.contiguous()?, 2, 0)?;
    }
    Ok(buffer)
}

/// The first `have` columns of `t`, with `len - have` zero columns in front.
fn left_pad(t: &Tensor, have: usize, len: usize) -> Result<Tensor> {
    let (batch, heads, _, head_dim) = t.dims4()?;
    let used = t.narrow(2, 0, have)?;
    if have == len {
        return Ok(used);
    }
    let zeros = Tensor::zeros((batch, heads, len - have, head_dim), t.dtype(), t.device())?;
    Ok(Tensor::cat(&[&zeros, &used], 2)?)
}
