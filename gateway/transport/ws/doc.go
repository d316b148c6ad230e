// Package ws is the WebSocket transport: the HTTP upgrade (gobwas/ws) and,
// after it, an epoll event loop on golang.org/x/sys/unix that owns every
// connection's file descriptor.
//
// Why not a goroutine per connection: an idle Phoenix client sends one
// heartbeat every 30 s, so a goroutine (≥ 2 KiB stack, often 8 KiB after
// growth) plus bufio buffers per connection costs 10–40× what the state we
// actually need costs. Here an idle connection is a file descriptor and one
// small struct; read buffers belong to the loop, and a connection holds bytes
// only while a frame or a write is unfinished. The measurements behind this
// are BenchmarkIdleConnHeap (test/e2e) and `fabric bench idle`, with results
// in bench/results/.
//
// Threads and locks:
//   - Each loop goroutine reads its connections, parses frames and calls
//     Session.HandleMessage in arrival order. Only the loop closes fds, so a
//     number reused by the kernel can never receive another client's bytes.
//   - Conn.Send and Conn.Close may be called from any goroutine. Send writes
//     straight to the socket when nothing is queued (the common case, no
//     extra hop) and otherwise queues a reference to the shared frame and arms
//     EPOLLOUT. Queues are bounded in bytes and in age; a client that cannot
//     keep up is closed with 4008 without slowing anyone else.
//   - Queues on sockets that stopped taking bytes also count against the
//     process's transport.OutputBudget (Config.Budget, shared with
//     LongPoll); over it the connection holding the most is closed 4008.
//   - Timeouts (idle, ping, stuck writes, close handshake) live on one
//     hashed timing wheel per loop, ticked once a second — no timer per
//     connection.
//
// Lock order: conn.mu before loop.mu. The wheel tick collects due
// connections under loop.mu and handles them after releasing it.
// The budget's scan (pool.Each) holds loop.mu and only tries
// conn.mu; its cut (CutSlow) runs with no lock held.
package ws
