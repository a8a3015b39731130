"""ROS 2 robot I/O: transports (rclpy or plain CycloneDDS), topic mapping, the generic robot."""

from robots.ros2.transport import Publisher, QosProfile, Subscription, Transport, make_transport

__all__ = ["Publisher", "QosProfile", "Subscription", "Transport", "make_transport"]
