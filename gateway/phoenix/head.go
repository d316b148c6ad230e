package phoenix

// AppendHead encodes the start of a v2 text message, everything before
// the payload: AppendHead(dst, j, r, t, e) + payload + "]" is exactly
// AppendMessage(dst, V2, j, r, t, e, payload). It lets messages that
// differ only in their refs share one encoding of a large payload (a
// presence_state to a wave of joiners: see transport.Message.Tail).
// AppendMessage writes the same head out rather than calling this: the
// call is not inlined and made every broadcast's encoding 25 % slower
// (BenchmarkAppendBroadcast 21 → 26 ns); TestAppendHeadPlusPayloadIsAppendMessage
// keeps the two in step.
func AppendHead(dst []byte, joinRef, ref Ref, topic, event string) []byte {
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	dst = append(dst, ',')
	dst = appendRef(dst, ref)
	dst = append(dst, ',')
	dst = appendString(dst, topic)
	dst = append(dst, ',')
	dst = appendString(dst, event)
	return append(dst, ',')
}
