//! What one guest store may take from the host besides time, under either allocator: linear
//! memory and table elements counted over *all* the store's memories and tables together (a
//! per-memory cap lets a component with many memories, or a `table.grow` loop, take gigabytes),
//! and how many instances, memories and tables it may create. Going over a limit traps the
//! guest with a message that names the limit.

use wasmtime::ResourceLimiter;

use super::ComponentLimits;

/// The limiter of one store.
pub(super) struct StoreBudget {
    limits: ComponentLimits,
    memory_bytes: usize,
    table_elements: usize,
}

impl StoreBudget {
    pub(super) fn new(limits: ComponentLimits) -> Self {
        Self {
            limits,
            memory_bytes: 0,
            table_elements: 0,
        }
    }

    /// Linear memory the store holds now, all its memories together.
    pub(super) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

/// Adds the growth `current → desired` to `used` if the total stays within `limit`; past it,
/// an error that traps the guest and names the limit.
fn grow(
    used: &mut usize,
    current: usize,
    desired: usize,
    limit: usize,
    what: &str,
) -> wasmtime::Result<bool> {
    let total = used.saturating_add(desired.saturating_sub(current));
    if total > limit {
        wasmtime::bail!("the component's limit of {limit} {what} is reached");
    }
    *used = total;
    Ok(true)
}

impl ResourceLimiter for StoreBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.memory_bytes;
        let what = "bytes of memory (all its memories together)";
        grow(&mut self.memory_bytes, current, desired, limit, what)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.limits.table_elements;
        let what = "table elements (all its tables together)";
        grow(&mut self.table_elements, current, desired, limit, what)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_counts_every_memory_and_table_together() {
        let limits = ComponentLimits {
            memory_bytes: 100,
            table_elements: 10,
            ..ComponentLimits::default()
        };
        let mut budget = StoreBudget::new(limits);
        assert!(budget.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would bring the total to 120.
        assert!(budget.memory_growing(0, 60, None).is_err());
        assert!(budget.memory_growing(60, 100, None).unwrap());
        assert!(budget.memory_growing(100, 101, None).is_err());

        assert!(budget.table_growing(0, 6, None).unwrap());
        assert!(budget.table_growing(6, 11, None).is_err());
        assert!(budget.table_growing(0, 4, None).unwrap());
        assert!(budget.table_growing(4, 5, None).is_err());
    }
}
