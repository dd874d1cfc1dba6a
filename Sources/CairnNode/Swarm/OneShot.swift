import NIOConcurrencyHelpers

/// A value settled once by whoever comes first (a dial, an event, a deadline); any number of
/// tasks wait for it. Later `settle` calls are ignored.
final class OneShot<T: Sendable>: Sendable {
    private struct State {
        var value: T?
        var waiters: [CheckedContinuation<T, Never>] = []
    }
    private let state = NIOLockedValueBox(State())

    init() {}

    /// Settles the value unless it already is; returns whether this call settled it.
    @discardableResult
    func settle(_ value: T) -> Bool {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<T, Never>]? in
            guard s.value == nil else { return nil }
            s.value = value
            defer { s.waiters = [] }
            return s.waiters
        }
        guard let waiters else { return false }
        for w in waiters { w.resume(returning: value) }
        return true
    }

    var isSettled: Bool { state.withLockedValue { $0.value != nil } }

    func wait() async -> T {
        await withCheckedContinuation { c in
            let ready = state.withLockedValue { s -> T? in
                if let v = s.value { return v }
                s.waiters.append(c)
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    /// Waits, settling with `fallback` after `timeout` (or when the waiting task is cancelled).
    func wait(timeout: Duration, fallback: T) async -> T {
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            settle(fallback)
        }
        defer { timer.cancel() }
        return await withTaskCancellationHandler { await wait() } onCancel: { settle(fallback) }
    }
}
