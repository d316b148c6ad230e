package hub

// Slot is where a member sits in its channel's member list, kept by the
// member's key (see Slotted) so that finding a member to remove it needs
// no key → slot map: in a channel of 16 members or more that map cost
// about 50 bytes per member.
type Slot struct {
	i int32 // index + 1; 0 while not a member
}

// Slotted is implemented by member keys that carry their own Slot (the
// session's join instances). Such a key is a member of one channel at a
// time; the hub reads and writes its Slot only under that channel's lock.
type Slotted interface {
	MemberSlot() *Slot
}

// slotOf returns key's Slot, or nil when it keeps none.
func slotOf(key any) *Slot {
	if s, ok := key.(Slotted); ok {
		return s.MemberSlot()
	}
	return nil
}

// placed records that members[i] sits at i (ch.mu held): in its key's
// Slot, else in the index when there is one. add creates the index.
func (ch *channel) placed(i int) {
	k := ch.members[i].Key
	if sl := slotOf(k); sl != nil {
		sl.i = int32(i) + 1
	} else if ch.index != nil {
		ch.index[k] = i
	}
}

// unplaced forgets key's slot once it left the member list (ch.mu held).
func (ch *channel) unplaced(key any) {
	if sl := slotOf(key); sl != nil {
		sl.i = 0
	} else if ch.index != nil {
		delete(ch.index, key)
	}
}
