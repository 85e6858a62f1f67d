package model

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

// bookkeeping fields are set by calsync itself or carry no meaning of their
// own: they never make a change.
var bookkeeping = map[protoreflect.Name]bool{
	"create_time": true,
	"update_time": true,
	"raw":         true,
	// A provider may bump its update time without changing anything a
	// subscriber can see (Recall does when bots change).
	"provider_update_time": true,
}

// ChangedFields returns the names of the normalized fields that differ
// between prev and next (both of the same message type), in field-number
// order. Bookkeeping fields (create_time, update_time, provider_update_time, raw)
// are ignored, so
// an empty result means the change is a no-op.
func ChangedFields(prev, next proto.Message) []string {
	if a, ok := prev.(*calsyncv1.CalendarEvent); ok {
		if b, ok := next.(*calsyncv1.CalendarEvent); ok {
			return eventChangedFields(a, b)
		}
	}
	return changedFieldsReflect(prev, next)
}

// changedFieldsReflect is ChangedFields for any message, through
// reflection.
func changedFieldsReflect(prev, next proto.Message) []string {
	pm, nm := prev.ProtoReflect(), next.ProtoReflect()
	fields := pm.Descriptor().Fields()
	var changed []string
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if bookkeeping[fd.Name()] {
			continue
		}
		if !valuesEqual(fd, pm, nm) {
			changed = append(changed, string(fd.Name()))
		}
	}
	return changed
}

func valuesEqual(fd protoreflect.FieldDescriptor, a, b protoreflect.Message) bool {
	if a.Has(fd) != b.Has(fd) {
		return false
	}
	if !a.Has(fd) {
		return true
	}
	va, vb := a.Get(fd), b.Get(fd)
	switch {
	case fd.IsList():
		la, lb := va.List(), vb.List()
		if la.Len() != lb.Len() {
			return false
		}
		for i := 0; i < la.Len(); i++ {
			if !scalarOrMessageEqual(fd, la.Get(i), lb.Get(i)) {
				return false
			}
		}
		return true
	case fd.IsMap():
		return proto.Equal(a.Interface(), b.Interface()) // not used by the model
	default:
		return scalarOrMessageEqual(fd, va, vb)
	}
}

func scalarOrMessageEqual(fd protoreflect.FieldDescriptor, a, b protoreflect.Value) bool {
	if fd.Message() != nil {
		return proto.Equal(a.Message().Interface(), b.Message().Interface())
	}
	return a.Equal(b)
}

// EventIsNewer reports whether next may replace prev: calsync never lets an
// older provider version overwrite a newer one. Versions without a provider
// update time are ordered by arrival, so they always replace.
func EventIsNewer(prev, next *calsyncv1.CalendarEvent) bool {
	pt, nt := prev.GetProviderUpdateTime(), next.GetProviderUpdateTime()
	if pt == nil || nt == nil {
		return true
	}
	return !nt.AsTime().Before(pt.AsTime())
}
