//! One native call per depth diff: both sides' levels applied at once, and a report
//! of what changed where the output looks (the best level, the top `n`), so the
//! Python book needn't fetch and compare levels after every diff.
//!
//! Same keys, text and refusals as `NativeSide.update` (`crate::price_key`,
//! `crate::size_is_zero`); every level of both sides is parsed before any is
//! applied, so a `NotRepresentable` leaves both sides untouched. The fast parse
//! reads the list items without taking references (the caller's lists hold them
//! for the whole call) and only the levels kept in a side are referenced.

use crate::{parse_level, price_key, size_is_zero, NativeSide, NotRepresentable};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

/// Flags returned by `apply_diff`: the bid/ask best level may have changed (a level
/// at the best price was set, or the best price moved), the bid/ask top n changed.
pub const BID_BEST: u8 = 1;
pub const ASK_BEST: u8 = 2;
pub const BID_TOP: u8 = 4;
pub const ASK_TOP: u8 = 8;

const POW10: [i128; 19] = {
    let mut table = [1i128; 19];
    let mut i = 1;
    while i < 19 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `price_key` for the common short text (at most 19 digits, at most 18 of them
/// after the point) in one pass; anything else goes to `price_key`.
fn fast_price_key(text: &[u8]) -> Option<i128> {
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut frac: Option<usize> = None;
    for &b in text {
        if b.is_ascii_digit() {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            digits += 1;
            if let Some(f) = frac.as_mut() {
                *f += 1;
            }
        } else if b == b'.' && frac.is_none() && digits > 0 {
            frac = Some(0);
        } else {
            return None;
        }
    }
    let frac = frac.unwrap_or(0);
    let trailing_dot = text.last() == Some(&b'.');
    if digits == 0 || digits > 19 || frac > 18 || trailing_dot {
        return None;
    }
    Some(i128::from(mantissa) * POW10[18 - frac])
}

/// A level about to be applied; `price`/`size` are borrowed from the caller's lists
/// (or from `Parsed.keep` for the rare level that took the general path).
struct Change {
    key: i128,
    zero: bool,
    price: *mut ffi::PyObject,
    size: *mut ffi::PyObject,
}

/// UTF-8 of an exact `str` (borrowed pointer), or None when it is not an exact `str`.
unsafe fn exact_str<'a>(obj: *mut ffi::PyObject) -> PyResult<Option<&'a [u8]>> {
    if ffi::Py_TYPE(obj) != std::ptr::addr_of_mut!(ffi::PyUnicode_Type) {
        return Ok(None);
    }
    let mut len: ffi::Py_ssize_t = 0;
    let data = ffi::PyUnicode_AsUTF8AndSize(obj, &mut len);
    if data.is_null() {
        return Err(PyErr::fetch(Python::assume_gil_acquired()));
    }
    Ok(Some(std::slice::from_raw_parts(data.cast::<u8>(), len as usize)))
}

/// Fast form: an exact 2-tuple of exact `str`s. None: take the general path.
unsafe fn parse_fast(item: *mut ffi::PyObject) -> PyResult<Option<Change>> {
    if ffi::Py_TYPE(item) != std::ptr::addr_of_mut!(ffi::PyTuple_Type) || ffi::PyTuple_Size(item) != 2
    {
        return Ok(None);
    }
    let price = ffi::PyTuple_GetItem(item, 0);
    let size = ffi::PyTuple_GetItem(item, 1);
    let (Some(price_text), Some(size_text)) = (exact_str(price)?, exact_str(size)?) else {
        return Ok(None);
    };
    let key = match fast_price_key(price_text) {
        Some(key) => key,
        None => {
            let text = std::str::from_utf8_unchecked(price_text);
            price_key(text).ok_or_else(|| crate::not_representable("price", text))?
        }
    };
    let size_str = std::str::from_utf8_unchecked(size_text);
    let zero = size_is_zero(size_str).ok_or_else(|| crate::not_representable("size", size_str))?;
    Ok(Some(Change { key, zero, price, size }))
}

/// Every level of `levels` (a list), in order.
fn parse_list(
    levels: &Bound<'_, PyAny>,
    out: &mut Vec<Change>,
    keep: &mut Vec<Py<PyString>>,
) -> PyResult<()> {
    let list = levels
        .downcast::<PyList>()
        .map_err(|_| NotRepresentable::new_err("depth levels that are not a list"))?;
    let ptr = list.as_ptr();
    out.reserve(list.len());
    for i in 0..list.len() {
        // SAFETY: the GIL is held, i < len, and nothing runs Python code that could
        // change the list before the levels are applied (strings have no __del__).
        let item = unsafe { ffi::PyList_GetItem(ptr, i as ffi::Py_ssize_t) };
        if item.is_null() {
            return Err(PyErr::fetch(list.py()));
        }
        if let Some(change) = unsafe { parse_fast(item)? } {
            out.push(change);
            continue;
        }
        // A list pair, a str subclass, ...: as NativeSide.update takes it.
        let item = unsafe { Bound::from_borrowed_ptr(list.py(), item) };
        let parsed = parse_level(&item)?;
        out.push(Change {
            key: parsed.key,
            zero: parsed.zero,
            price: parsed.price.as_ptr(),
            size: parsed.size.as_ptr(),
        });
        keep.push(parsed.price);
        keep.push(parsed.size);
    }
    Ok(())
}

type Best = Option<(i128, *mut ffi::PyObject, *mut ffi::PyObject)>;

fn best_of(side: &NativeSide) -> Best {
    let entry = if side.descending {
        side.levels.iter().next_back()
    } else {
        side.levels.iter().next()
    };
    entry.map(|(k, (p, s))| (*k, p.as_ptr(), s.as_ptr()))
}

/// Apply `changes` to `side`; returns (best may have changed, top n changed).
fn apply_side(py: Python<'_>, side: &mut NativeSide, changes: &[Change], n: usize) -> (bool, bool) {
    if changes.is_empty() {
        return (false, false);
    }
    let before = best_of(side);
    // While nothing in the top n changed, its n-th key is the one found here: a
    // change is in the top n exactly when its price is at or better than that key
    // (any change, when the side has fewer than n levels).
    let threshold = if n == 0 || side.levels.len() < n {
        None
    } else if side.descending {
        side.levels.keys().rev().nth(n - 1).copied()
    } else {
        side.levels.keys().nth(n - 1).copied()
    };
    let descending = side.descending;
    let mut top = false;
    for change in changes {
        let old = if change.zero {
            side.levels.remove(&change.key)
        } else {
            // SAFETY: borrowed pointers to str objects alive for this call.
            let (price, size) = unsafe {
                (
                    Bound::from_borrowed_ptr(py, change.price).downcast_into_unchecked::<PyString>(),
                    Bound::from_borrowed_ptr(py, change.size).downcast_into_unchecked::<PyString>(),
                )
            };
            side.levels.insert(change.key, (price.unbind(), size.unbind()))
        };
        let changed = !change.zero || old.is_some();
        if let Some((price, size)) = old {
            // The GIL is held: release directly (Py's Drop first asks a thread-local).
            unsafe {
                ffi::Py_DecRef(price.into_ptr());
                ffi::Py_DecRef(size.into_ptr());
            }
        }
        if changed && !top && n > 0 {
            top = match threshold {
                None => true,
                Some(t) => {
                    if descending {
                        change.key >= t
                    } else {
                        change.key <= t
                    }
                }
            };
        }
    }
    (best_of(side) != before, top)
}

/// Apply one diff to both sides (bids then asks, each level in order); the flags say
/// what changed: `BID_BEST | ASK_BEST` (the best level object may differ: compare
/// the text to know whether the BBO did) and `BID_TOP | ASK_TOP` (a level within
/// the best `n` of that side was set or removed; never set for `n == 0`).
/// Lists only; `NotRepresentable` before any change for anything the sides'
/// `update` would refuse, and for levels that are not lists.
#[pyfunction]
pub fn apply_diff(
    py: Python<'_>,
    bid_side: &Bound<'_, NativeSide>,
    ask_side: &Bound<'_, NativeSide>,
    bids: &Bound<'_, PyAny>,
    asks: &Bound<'_, PyAny>,
    n: usize,
) -> PyResult<u8> {
    let mut keep = Vec::new();
    let mut bid_changes = Vec::new();
    let mut ask_changes = Vec::new();
    parse_list(bids, &mut bid_changes, &mut keep)?;
    parse_list(asks, &mut ask_changes, &mut keep)?;
    let mut flags = 0u8;
    let (best, top) = apply_side(py, &mut bid_side.borrow_mut(), &bid_changes, n);
    flags |= if best { BID_BEST } else { 0 } | if top { BID_TOP } else { 0 };
    let (best, top) = apply_side(py, &mut ask_side.borrow_mut(), &ask_changes, n);
    flags |= if best { ASK_BEST } else { 0 } | if top { ASK_TOP } else { 0 };
    drop(keep);
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_key_agrees_with_price_key() {
        for text in [
            "0", "1", "2.5", "2.50", "0.001", "2683.80000000", "000123.4500", "1.", ".5", "1.2.3",
            "", "-1", "1e3", "1234567890123456789", "12345678901234567890", "0.123456789012345678",
            "0.1234567890123456789", "0.1000000000000000000",
        ] {
            let fast = fast_price_key(text.as_bytes());
            if let Some(key) = fast {
                assert_eq!(Some(key), price_key(text), "{text}");
            }
        }
        assert_eq!(fast_price_key(b"2.5"), price_key("2.50"));
    }
}

