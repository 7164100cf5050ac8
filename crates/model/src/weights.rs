//! Reading and writing safetensors checkpoints: single-file or sharded
//! (`model.safetensors.index.json`), any float dtype converted to the requested one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// The weight files of the checkpoint in `dir`, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.is_file() {
        return Err(Error::Checkpoint {
            path: dir.to_path_buf(),
            message: "neither model.safetensors nor model.safetensors.index.json exists".into(),
        });
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&index_path, e))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Checkpoint {
            path: index_path.clone(),
            message: "no `weight_map` object".into(),
        })?;
    let mut files = BTreeSet::new();
    for file in map.values() {
        let name = file.as_str().ok_or_else(|| Error::Checkpoint {
            path: index_path.clone(),
            message: format!("weight_map value {file} is not a file name"),
        })?;
        if name.contains('/') || name.contains("..") {
            return Err(Error::Checkpoint {
                path: index_path.clone(),
                message: format!("weight_map names a file outside the checkpoint: {name}"),
            });
        }
        files.insert(name.to_string());
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// All tensors of the checkpoint in `dir`, converted to `dtype` on `device`.
pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut tensors = HashMap::new();
    for file in weight_files(dir)? {
        let loaded =
            candle_core::safetensors::load(&file, device).map_err(|e| Error::Checkpoint {
                path: file.clone(),
                message: e.to_string(),
            })?;
        for (name, tensor) in loaded {
            let tensor = if tensor.dtype().is_float() {
                tensor.to_dtype(dtype)?
            } else {
                tensor
            };
            tensors.insert(name, tensor);
        }
    }
    Ok(tensors)
}

/// Trainable variables holding `tensors`, keyed by name, for `VarBuilder::from_varmap`.
pub fn into_var_map(tensors: HashMap<String, Tensor>) -> Result<VarMap> {
    let var_map = VarMap::new();
    {
        let mut data = var_map
            .data()
            .lock()
            .map_err(|_| Error::Input("variable map lock poisoned".into()))?;
        for (name, tensor) in tensors {
            data.insert(name, Var::from_tensor(&tensor)?);
        }
    }
    Ok(var_map)
}

/// Writes `tensors` to one safetensors file (with `format: pt` metadata, which transformers
/// requires), each stored as `dtype`.
pub fn save(tensors: &BTreeMap<String, Tensor>, dtype: DType, path: &Path) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let tensor = tensor.to_dtype(dtype)?.flatten_all()?;
        let bytes = match dtype {
            DType::F32 => bytes_of(&tensor.to_vec1::<f32>()?, f32::to_le_bytes),
            DType::F64 => bytes_of(&tensor.to_vec1::<f64>()?, f64::to_le_bytes),
            DType::BF16 => bytes_of(&tensor.to_vec1::<half::bf16>()?, half::bf16::to_le_bytes),
            DType::F16 => bytes_of(&tensor.to_vec1::<half::f16>()?, half::f16::to_le_bytes),
            other => {
                return Err(Error::Input(format!(
                    "cannot save tensors as {other:?}; use f32, f64, bf16 or f16"
                )))
            }
        };
        let shape = tensors[name].dims().to_vec();
        buffers.push((name.clone(), shape, bytes));
    }
    let st_dtype = match dtype {
        DType::F32 => safetensors::Dtype::F32,
        DType::F64 => safetensors::Dtype::F64,
        DType::BF16 => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F16,
    };
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view =
            safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes).map_err(|e| {
                Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("tensor {name}: {e}"),
                }
            })?;
        views.push((name.clone(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(metadata), path).map_err(|e| {
        Error::Checkpoint {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    // The safetensors crate creates the file owner-only; a checkpoint is meant to be shared
    // (another user's inference server, a container).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

fn bytes_of<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}
