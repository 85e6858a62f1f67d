package server

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/calsync/calsync/server/apidesc"
)

// registerReflection serves gRPC reflection (both protocol versions, as
// grpcurl and older tools differ) from descriptors that keep the .proto
// comments, so `grpcurl describe` shows the API's documentation.
func registerReflection(s *grpc.Server) error {
	resolver, err := apidesc.Load()
	if err != nil {
		return err
	}
	opts := reflection.ServerOptions{Services: s, DescriptorResolver: resolver}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return nil
}
