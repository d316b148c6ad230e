// Package natsbroker implements the hub's broker port (gateway/broker) on
// core NATS with nats.go.
//
// Topics become subjects through package subject ("room:lobby" under prefix
// "fabric" is "fabric.room.lobby"). The event name travels in the NATS
// header Fabric-Event and the body is the payload, so any NATS client can
// publish to a channel:
//
//	nats pub fabric.room.lobby '{"body":"hi"}' -H Fabric-Event:new_msg
//
// Delivery is core NATS: at most once. Messages carry Offset 0; persistent
// namespaces (JetStream, offsets, replay) are layered elsewhere.
package natsbroker
