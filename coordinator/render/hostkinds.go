package render

import (
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// kindPayload returns the message set in r's kind oneof, for kinds that
// payload does not list (the host-baseline kinds: sysctl, kernel_module,
// mount, command), or nil.
func kindPayload(r *hivev1.Resource) proto.Message {
	m := r.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("kind")
	if od == nil {
		return nil
	}
	fd := m.WhichOneof(od)
	if fd == nil || fd.Message() == nil {
		return nil
	}
	return m.Get(fd).Message().Interface()
}
