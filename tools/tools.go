//go:build tools

// Package tools pins the code generators calsync builds with. The blank import
// keeps grpc-gateway v1 in this module so its googleapis .proto files
// (google/api/annotations.proto, http.proto, httpbody.proto) are in the module
// cache at generate time; they are never copied into the repository.
package tools

import _ "github.com/grpc-ecosystem/grpc-gateway/protoc-gen-grpc-gateway/descriptor"
