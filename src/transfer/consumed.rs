//! Handing out the items of a large list in order while giving its memory back as
//! they go: an offer of 200 000 entries (20 MiB) and what is made of it were
//! otherwise both held whole at the end of planning (the receiver's peak), and so
//! were a plan and the sender's list of files to send.

/// Items handed out between two returns of memory.
const STEP: usize = 8192;

/// The items of `list`, in order; the list shrinks every [`STEP`] items.
pub(crate) fn consumed<T>(mut list: Vec<T>) -> impl Iterator<Item = T> {
    list.reverse();
    std::iter::from_fn(move || {
        let item = list.pop()?;
        if list.len() % STEP == 0 {
            list.shrink_to_fit();
        }
        Some(item)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn items_come_in_order_and_all_of_them() {
        let list: Vec<u32> = (0..20_000).collect();
        assert_eq!(
            super::consumed(list).collect::<Vec<_>>(),
            (0..20_000).collect::<Vec<_>>()
        );
        assert_eq!(super::consumed(Vec::<u8>::new()).count(), 0);
    }
}
