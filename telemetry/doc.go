// Package telemetry measures a Warren session: round-trip time, jitter, loss and
// link health from keepalives, the keepalive interval that follows from them, dead
// peer detection, traffic and drop counters, and the per-transport overhead behind
// the MTU a tunnel can carry (DESIGN §6).
//
// It imports only the standard library, so every layer of Warren can use it and
// an embedding program pays nothing for it; the Prometheus export lives apart, in
// telemetry/promexport, so that the root package's import graph stays free of
// client_golang.
//
// # Estimator
//
// An [Estimator] is fed by one session's keepalives. The side that sends them (the
// client) reports each Keepalive with [Estimator.Sent] and each KeepaliveAck with
// [Estimator.Acked]; the side that only answers them (the hub) reports each
// Keepalive it receives with [Estimator.Received], which measures loss from gaps
// in the sequence numbers but no round trip (the send time in a Keepalive is the
// peer's clock). Every other frame from the peer is reported with
// [Estimator.Heard]. [Estimator.Check], called on a timer, settles keepalives
// whose ack is overdue and declares the peer dead.
//
//   - Smoothed RTT and RTT variance follow TCP (RFC 6298 §2): the first sample R
//     sets SRTT = R, RTTVAR = R/2; later ones RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|,
//     then SRTT = 7/8 SRTT + 1/8 R.
//   - Jitter follows RFC 3550 §6.4.1 with the round trip as the transit time:
//     J += (|D| - J) / 16, D the difference of two consecutive RTT samples.
//   - Minimum, maximum and last RTT are kept as measured.
//   - Loss is the share of lost keepalives among the settled ones of the last
//     LossWindow keepalives (default 32: 32 minutes of keepalives at 60 s, about
//     5 minutes at 10 s). A keepalive is settled when its ack arrives (received) or when it
//     is known lost: a later sequence was acknowledged while it was not (a gap),
//     or its ack is overdue by more than the retransmission timeout of RFC 6298
//     (SRTT + 4 RTTVAR, at least 1 s, 3 s before the first sample). An ack that
//     comes after all turns the loss back into a receipt. On the receiving side a
//     sequence number skipped over is lost, one that arrives later is received.
//     That side cannot see a cut link as loss (it does not know when the next
//     Keepalive is due); the dead-peer timer covers it.
//
// # Link health
//
// [Health] is unknown until the first settled keepalive, then healthy, degraded
// or critical (see [Thresholds] for the defaults):
//
//   - critical when loss ≥ 20 %, or SRTT ≥ 1 s, or the last 3 settled keepalives
//     were all lost (a cut link shows there within three intervals, long before
//     the loss ratio of the whole window moves);
//   - degraded when loss ≥ 5 % or SRTT ≥ 300 ms;
//   - healthy otherwise.
//
// Health worsens at once. It improves only with hysteresis, so that a link near a
// threshold does not flap: a level is left for a better one only when loss and
// SRTT are below half of that level's loss threshold and 80 % of its RTT
// threshold, and stay there for 3 consecutive acknowledged keepalives. With the
// defaults a link left critical for degraded once loss < 10 % and SRTT < 800 ms
// for three acks, and left degraded for healthy once loss < 2.5 % and SRTT <
// 240 ms for three acks.
//
// The keepalive interval follows health: 60 s healthy, 30 s degraded, 10 s
// critical, and 30 s while health is unknown (no evidence of trouble, none of
// health either). The peer is dead after 180 s in which nothing was heard from
// it; [Estimator.Check] reports that once. All of these are [Config] fields.
//
// Time comes from a [Clock], so tests drive an estimator with a manual clock
// (telemetry/telemetrytest) and never sleep.
//
// # Quality
//
// [Quality] is a snapshot for Client.ConnectionQuality and Server.ClientTelemetry.
// Its zero value is the explicit unknown state: Health unknown, no RTT samples,
// no settled keepalives. A WireGuard peer, which has no Warren keepalives, reports
// that (with its last handshake as LastHeard) rather than invented numbers.
//
// # Counters and MTU
//
// [Counters] counts traffic, drops by [DropReason], sessions by [Transport] and
// handshakes with atomics; its Add methods never allocate. [ComputeMTU] turns the
// framing layers of each transport, as the caller measures them from the codec
// and handshake it runs, into per-transport overhead and effective MTU.
package telemetry
